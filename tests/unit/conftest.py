"""Fixtures shared by the unit tests; their builders are in helpers.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import tcpemu
from tcpemu import MemoryLink

from .helpers import Peer


@pytest.fixture
async def engine_and_peer() -> AsyncIterator[tuple[tcpemu.Engine, Peer]]:
    """An engine on one end of a MemoryLink, a Peer on the other."""
    emu_link, peer_link = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu_link, seed=42) as engine:
        yield engine, Peer(peer_link)
    peer_link.close()
