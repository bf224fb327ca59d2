"""The soak's parts that need no network: its streamed patterns, what a soak connection keeps
between steps, the engine options it runs with, and what a stalled connection's error shows."""

from __future__ import annotations

import random
import sys

import pytest
import trio

import tcpemu
from tcpemu import MemoryLink
from tcpemu.soak import TRACE_DEPTH, Pattern, _Exchange, emu_window, engine_options, pattern, run_soak

from .helpers import Peer, open_server

SIZE = 10_000  # spans blocks whole and cut: BLOCK is 1,024


def _splits(rng: random.Random, total: int) -> list[int]:
    """Random piece sizes adding up to ``total``, from 1 byte to a few blocks."""
    sizes = []
    while total:
        n = min(total, rng.choice((1, 7, 1023, 1024, 1025, 1448, 4096)))
        sizes.append(n)
        total -= n
    return sizes


def test_a_pattern_read_piece_by_piece_is_the_whole_stream():
    whole = pattern(1, 2, 3, "up", SIZE)
    assert len(whole) == SIZE and whole != pattern(1, 2, 4, "up", SIZE) != pattern(1, 2, 3, "down", SIZE)
    for seed in range(5):
        p = Pattern(1, 2, 3, "up", SIZE)
        got = b"".join(p.read(n) for n in _splits(random.Random(seed), SIZE))
        assert got == whole and p.remaining == 0 and p.read(10) == b""


def test_a_pattern_matches_its_stream_in_any_pieces_and_not_a_changed_byte():
    whole = pattern(9, 0, 0, "down", SIZE)
    for seed in range(5):
        p, at = Pattern(9, 0, 0, "down", SIZE), 0
        for n in _splits(random.Random(seed), SIZE):
            assert p.matches(memoryview(whole)[at : at + n]), (seed, at, n)
            at += n
        assert p.remaining == 0
    for where in (0, 1023, 1024, 5000, SIZE - 1):
        bad = bytearray(whole)
        bad[where] ^= 1
        p = Pattern(9, 0, 0, "down", SIZE)
        assert p.matches(bad[:where]) and not p.matches(bad[where : where + 1448]), where
    assert not Pattern(9, 0, 0, "down", 10).matches(whole[:11])  # more than the stream has


def test_rewind_makes_the_unsent_bytes_again():
    whole = pattern(4, 1, 0, "up", SIZE)
    p = Pattern(4, 1, 0, "up", SIZE)
    chunk = p.read(4096)
    p.rewind(4096 - 1500)  # as a send() that took 1,500 bytes
    assert p.offset == 1500 and chunk[:1500] == whole[:1500]
    assert p.read(4096) == whole[1500:5596]
    p.rewind(0)
    assert p.offset == 5596
    for bad in (-1, 5597):
        with pytest.raises(tcpemu.UsageError, match=f"rewind 0 to 5596 bytes, got {bad}"):
            p.rewind(bad)
    with pytest.raises(tcpemu.UsageError, match="size must be >= 0 bytes, got -1"):
        Pattern(0, 0, 0, "up", -1)


def test_a_pattern_keeps_no_bytes_between_calls():
    # a thousand pairs have four patterns each, waiting most of the time: what one keeps
    # between reads and checks is what the soak holds per connection for its patterns
    p = Pattern(7, 999, 12345, "down", 1 << 20)
    p.read(1500)
    p.matches(b"")
    held = sys.getsizeof(p) + sum(sys.getsizeof(getattr(p, name)) for name in type(p).__slots__)
    assert held < 256, {name: sys.getsizeof(getattr(p, name)) for name in type(p).__slots__}
    assert not hasattr(p, "__dict__")


def test_the_emulator_window_is_a_share_of_the_ring_between_4_and_64_kib():
    assert emu_window(1) == emu_window(180) == 65535
    assert emu_window(1000) == 8192 * 1448 // 1000
    assert emu_window(40000) == 4096
    assert all(emu_window(n) >= emu_window(n + 1) for n in range(1, 3000))


async def test_a_soak_engine_keeps_a_short_trace_and_a_stall_error_shows_it():
    emu_link, peer_link = MemoryLink.pair()
    opts = engine_options(seed=1)
    assert opts["reliable"] is True and opts["trace_depth"] == TRACE_DEPTH < 32
    async with tcpemu.open_engine(link=emu_link, **opts) as engine:
        peer = Peer(peer_link)
        conn, ack = await open_server(engine, peer)
        for i in range(TRACE_DEPTH + 5):
            peer.send(7001 + i, ack, payload=b"x")
        await conn.wait_until(lambda c: c.core.stream_available() == TRACE_DEPTH + 5, timeout=5)
        trace = conn.trace()
        assert len(trace) == TRACE_DEPTH and "<" in trace[-1]  # the last segments, not the handshake
        with trio.CancelScope() as scope:
            ex = _Exchange("pair 3 connection 4", scope, 60.0, trio.current_time() + 900)
            ex.conn = conn
            ex.step("emulator send", "the IUT's ACKs")
            message = str(ex.timeout_error())
        assert message.startswith(
            "pair 3 connection 4: 60 s without progress; emulator send: waiting for the IUT's ACKs "
            "(emulator ESTABLISHED, 0 bytes unacknowledged"
        ), message
        assert message.endswith(
            f"; the emulator's last {TRACE_DEPTH} segments and events: " + " | ".join(trace)
        )


@pytest.mark.parametrize("window", [0, 1023, 65536, -1])
async def test_a_window_out_of_range_is_refused_before_anything_runs(window):
    with pytest.raises(
        tcpemu.UsageError, match=rf"run_soak: window={window} is out of range; .*1024 <= window"
    ):
        await run_soak(connections=1, duration=1, window=window)
