"""What a soak connection holds in the soak's own code, while it runs against kernel sockets:
no chunk kept while a task waits, no pattern block kept between calls."""

from __future__ import annotations

import tracemalloc

import pytest
import trio

import tcpemu.soak
from tcpemu.faults import Faults
from tcpemu.soak import SoakStats, run_soak

pytestmark = pytest.mark.e2e

PAIRS = 20
PER_CONNECTION = 8192
"""Bytes allocated in soak.py and still alive, per open connection, at most.  About 4 KiB is
what it holds (one segment's bytes being sent, its tasks' frames, closures and step texts);
measured before: 13.5 KiB, a 4 KiB chunk kept by each of its sending tasks while they waited
and a 1 KiB block by each of its four patterns."""


async def test_the_soak_code_holds_less_than_8_kib_per_open_connection():
    faults = Faults(drop=0.01, duplicate=0.01, reorder=0.01, delay=0.01)
    stats = SoakStats()
    here = tracemalloc.Filter(True, tcpemu.soak.__file__)
    held: list[tuple[int, int]] = []  # (bytes allocated in soak.py and alive, connections open)

    async def sample() -> None:
        while True:
            await trio.sleep(0.5)  # a sampling period, not a synchronisation
            if stats.open >= PAIRS // 2:
                snap = tracemalloc.take_snapshot().filter_traces([here])
                held.append((sum(s.size for s in snap.statistics("filename")), stats.open))

    tracemalloc.start(1)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            result = await run_soak(
                connections=PAIRS, duration=8, seed=11, faults_out=faults, faults_in=faults, stats=stats
            )
            nursery.cancel_scope.cancel()
    finally:
        tracemalloc.stop()
    assert result.errors == () and result.mismatches == 0 and result.closed > PAIRS
    assert len(held) >= 3, held  # it was looked at while the connections ran
    worst = max(size / n for size, n in held)
    assert worst < PER_CONNECTION, held
