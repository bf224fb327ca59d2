"""Fixtures of the end-to-end tests; their helpers are in helpers.py (re-exported here
for the tests that take them from the conftest)."""

from __future__ import annotations

import pytest

from .helpers import (
    EMU_PORT,
    IUT_PORT,
    connect_result,
    emu_client,
    emu_server,
    family,
    iut_connect,
    iut_listener,
    open_emulated_server,
    recv_exactly,
    send_all,
)

__all__ = [
    "EMU_PORT",
    "IUT_PORT",
    "connect_result",
    "emu_client",
    "emu_server",
    "family",
    "iut_connect",
    "iut_listener",
    "open_emulated_server",
    "recv_exactly",
    "send_all",
]


@pytest.fixture(params=[4, 6], ids=["ipv4", "ipv6"])
def ipv(request: pytest.FixtureRequest) -> int:
    """The IP version a test runs over: every end-to-end test of the connection API runs over both."""
    return request.param
