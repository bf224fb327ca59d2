"""The compiled part (tcpemu/_speedups.c) against the Python path it stands in for.

The same frames go to two engines, one with the compiled header prediction and
one without; every message, trace record, slot of the core, counter and frame
sent must come out the same, value and type.  The compiled ring walk and the
Python one read the same ring contents.  CI builds the module (``nox -s tests``
sets TCPEMU_REQUIRE_SPEEDUPS=1, so a missing build fails there rather than skips).
"""

from __future__ import annotations

import contextlib
import dataclasses
import mmap
import os
import struct
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpemu
from tcpemu import MemoryLink, SegmentKind, _engine, capture
from tcpemu._accel import SPEEDUPS
from tcpemu._io import PacketRing
from tcpemu.core import ConnectionCore
from tcpemu.wire import Segment, TcpFlags, TcpOption

from .helpers import EMU_PORT, PEER_PORT, Peer, open_server, peer_frame

REQUIRED = os.environ.get("TCPEMU_REQUIRE_SPEEDUPS", "") not in ("", "0")
pytestmark = pytest.mark.skipif(
    SPEEDUPS is None and not REQUIRED,
    reason="tcpemu._speedups was not built here (no C compiler at install time, or TCPEMU_PURE_PYTHON set)",
)
EXAMPLES = int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "300"))
A, S, F, R, P, U = (TcpFlags.ACK, TcpFlags.SYN, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH, TcpFlags.URG)
IRS = 7000


def test_the_compiled_module_is_there_when_required():
    """What makes the comparisons below count: in CI they run, never skip."""
    assert SPEEDUPS is not None, "TCPEMU_REQUIRE_SPEEDUPS is set but tcpemu._speedups did not load"
    assert _engine.TAKE_PREDICTED is not None


def snap(value: Any) -> Any:
    """A value with the type of every part kept, so that 1 and True or None and 0 differ."""
    if isinstance(value, tuple):
        return (type(value).__name__, tuple(snap(v) for v in value))
    if isinstance(value, (list, deque)):
        return [snap(v) for v in value]
    if isinstance(value, bytearray):
        return ("bytearray", bytes(value))
    if isinstance(value, Mapping):
        return {k: snap(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: snap(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return (type(value).__name__, fields)
    return (type(value).__name__, value)


def core_snapshot(core: ConnectionCore) -> dict[str, Any]:
    return {name: snap(getattr(core, name, "<unset>")) for name in ConnectionCore.__slots__}


# one step: (what, seq offset, flags, payload, ack offset, window, TSval or None)
steps = st.lists(
    st.tuples(
        st.sampled_from(["seg"] * 8 + ["wrong-mac", "other-flow", "truncated", "vlan", "read"]),
        st.sampled_from([0] * 6 + [-3, 1, 5, 40]),  # from rcv_nxt: mostly in order
        st.sampled_from([A, A, A | P, A | U, A | F, A | R, R, A | P | TcpFlags.CWR, TcpFlags(0), S]),
        st.binary(max_size=24),
        st.sampled_from([0, 0, 0, 10, 50, 60, -5, 2**31]),  # acknowledges some of our 50 bytes in flight
        st.integers(0, 0xFFFF),
        st.one_of(st.none(), st.integers(0, 2**32 - 1)),
    ),
    min_size=1,
    max_size=40,
)
setups = st.fixed_dictionaries(
    {
        "version": st.sampled_from([4, 6]),
        "timestamps": st.booleans(),
        "wscale": st.booleans(),
        "max_queue": st.sampled_from([2, 8, 1000]),
        "max_stream": st.sampled_from([30, 1 << 20]),
        "in_flight": st.booleans(),
        "reliable": st.booleans(),
    }
)


@contextlib.asynccontextmanager
async def opened(
    *,
    compiled: bool = True,
    version: int = 4,
    syn_options: tuple[TcpOption, ...] = (TcpOption.mss(1000),),
    **kw,
) -> AsyncIterator[tuple[tcpemu.Engine, tcpemu.Connection, Peer, MemoryLink, int]]:
    """An engine on an in-memory link, with or without the compiled part, and one SERVER
    connection the peer opened (its SYN at IRS): (engine, conn, peer, peer's link, our ISN + 1)."""
    _engine.ENGINE_CONTEXT.set(None)  # no pcapng per run from the plugin's context
    emu, peer_link = MemoryLink.pair()
    try:
        async with tcpemu.open_engine(link=emu, seed=42) as engine:
            if not compiled:
                engine._take_predicted = None
            peer = Peer(peer_link, version)
            conn, snd = await open_server(engine, peer, syn_options=syn_options, version=version, **kw)
            yield engine, conn, peer, peer_link, snd
    finally:
        peer_link.close()


def run_mocked(scenario: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    return trio.run(scenario, *args, clock=trio.testing.MockClock(autojump_threshold=0))


def run_engine(setup: dict[str, Any], plan: list[tuple], compiled: bool) -> dict[str, Any]:
    options = [TcpOption.mss(1000)]
    if setup["wscale"]:
        options.append(TcpOption.wscale(3))
    if setup["timestamps"]:
        options.append(TcpOption.timestamps(5, 0))

    async def scenario() -> dict[str, Any]:
        async with opened(
            compiled=compiled,
            version=setup["version"],
            syn_options=tuple(options),
            max_queue=setup["max_queue"],
            wscale=2 if setup["wscale"] else None,
            reliable=setup["reliable"],
        ) as (engine, conn, peer, peer_link, snd):
            conn.core.max_stream = setup["max_stream"]  # no argument for it: a small bound meets it soon
            if setup["in_flight"]:
                await conn.send_msg(b"x" * 50)
                await peer.expect()
            rcv = IRS + 1
            for what, off, flags, payload, ack_off, window, tsval in plan:
                opts = () if tsval is None else (TcpOption(1), TcpOption(1), TcpOption.timestamps(tsval, 9))
                seq = (rcv + off) % 2**32
                seg = Segment(
                    PEER_PORT + (what == "other-flow"),
                    EMU_PORT,
                    seq,
                    (snd + ack_off) % 2**32,
                    flags,
                    window,
                    options=opts,
                    payload=payload,
                )
                if what == "read":
                    # the pump takes what came so far (a batch ends), then the test reads one message
                    await trio.testing.wait_all_tasks_blocked()
                    with contextlib.suppress(tcpemu.WouldBlock):
                        conn.recv_msg_nowait(ack=False)
                    continue
                if what in ("seg", "other-flow"):
                    peer.send_segment(seg)
                else:
                    peer_link.send(mangle(what, seg, peer))
                if what == "seg" and off == 0 and not flags & (S | R):
                    rcv = (rcv + len(payload) + bool(flags & F)) % 2**32
            await trio.testing.wait_all_tasks_blocked()
            sent = []
            while (raw := peer_link.recv_nowait()) is not None:
                sent.append(raw)
            return {
                "core": core_snapshot(conn.core),
                "trace": snap(conn._trace),
                "last_msg": snap(conn._last_msg),
                "engine": snap(engine.statistics()),
                "connection": snap(conn.statistics()),
                "sent": sent,
            }

    return run_mocked(scenario)


def mangle(what: str, seg: Segment, peer: Peer) -> bytes:
    frame = peer_frame(seg, peer.version)
    if what == "wrong-mac":
        return bytes.fromhex("02000000bbbb") + frame[6:]
    if what == "truncated":
        return frame[: max(14, len(frame) - 7)]
    assert what == "vlan"
    return frame[:12] + b"\x81\x00\x00\x07" + frame[12:]


@settings(max_examples=EXAMPLES, deadline=None)
@given(setups, steps)
def test_compiled_prediction_leaves_everything_as_the_python_path(setup, plan):
    python = run_engine(setup, plan, compiled=False)
    compiled = run_engine(setup, plan, compiled=True)
    for part in python:
        assert compiled[part] == python[part], part


def test_the_compiled_path_takes_the_in_order_run():
    """Not a comparison that passes because nothing was compiled: in-order ACKs and
    data are taken by it (the Python path never runs for them)."""
    setup = dict(
        version=4, timestamps=True, wscale=True, max_queue=1000, max_stream=1 << 20,
        in_flight=False, reliable=False,
    )  # fmt: skip
    plan = [("seg", 0, A | P, b"abc", 0, 500, 100 + i) for i in range(20)]
    calls = []
    real = SPEEDUPS.take_predicted

    def counting(frames, i, *args):
        j = real(frames, i, *args)
        calls.append(j - i)
        return j

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_engine, "TAKE_PREDICTED", counting)
        result = run_engine(setup, plan, compiled=True)
    assert sum(calls) == 20, calls
    messages = [m for m in result["core"]["_queue"]]
    assert len(messages) == 20
    assert all(m[1][6] == ("SegmentKind", SegmentKind.EXPECTED) for m in messages)
    assert result["core"]["_stream"] == [("bytes", b"abc")] * 20  # the segments' own pieces
    assert result["core"]["_stream_len"] == ("int", 60)
    assert result["core"]["last_tsval_got"] == ("int", 119)
    assert messages[0][1][9] == ("int", 500 << 3)  # the peer's window scale applied


# --------------------------------------------------------------- the ring walk

SLOT = 256
TP_STATUS_USER, TP_STATUS_VLAN_VALID = 1, 0x10


def fake_ring(slots: list[tuple[int, bytes, int, int, int]], nr: int) -> PacketRing:
    """A PacketRing over anonymous memory laid out as the kernel lays out a TPACKET_V2
    ring: slot i holds (status, frame, tp_len, tp_mac, tci)."""
    ring = PacketRing.__new__(PacketRing)
    ring._map = mmap.mmap(-1, SLOT * nr)
    ring._view = memoryview(ring._map)
    ring._frame_size, ring._frame_nr, ring._head, ring.truncated = SLOT, nr, 0, 0
    for i, (status, frame, length, mac, tci) in enumerate(slots):
        off = i * SLOT
        struct.pack_into("=IIIHHIIH", ring._map, off, status, length, len(frame), mac, mac, 0, 0, tci)
        ring._map[off + mac : off + mac + len(frame)] = frame
    return ring


ring_slots = st.lists(
    st.tuples(
        st.sampled_from([0, TP_STATUS_USER, TP_STATUS_USER | TP_STATUS_VLAN_VALID, TP_STATUS_USER | 4]),
        st.binary(max_size=SLOT - 64),
        st.integers(0, 3),  # tp_len beyond the snapshot: a truncated frame
        st.sampled_from([32, 34, 48]),
        st.integers(0, 0xFFFF),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=EXAMPLES, deadline=None)
@given(ring_slots, st.integers(0, 11), st.integers(1, 16))
def test_compiled_ring_walk_reads_what_the_python_one_reads(slots, head, limit):
    nr = 12
    laid = [(s, f, len(f) + extra, mac, tci) for s, f, extra, mac, tci in slots]
    a, b = fake_ring(laid, nr), fake_ring(laid, nr)
    a._head = b._head = head % nr
    python_frames = a._recv_batch_python(limit)
    frames, b._head, truncated = SPEEDUPS.ring_batch(b._view, b._head, SLOT, nr, limit)
    b.truncated += truncated
    assert frames == python_frames
    assert all(type(f) is bytes for f in frames)
    assert (b._head, b.truncated) == (a._head, a.truncated)
    assert bytes(a._map) == bytes(b._map)  # the same slots handed back to the kernel


def test_the_ring_walk_puts_a_vlan_tag_back_and_hands_slots_back():
    frame = bytes(range(60))
    ring = fake_ring([(TP_STATUS_USER | TP_STATUS_VLAN_VALID, frame, 60, 32, 0x2007), (0, b"", 0, 32, 0)], 2)
    frames, head, truncated = SPEEDUPS.ring_batch(ring._view, 0, SLOT, 2, 8)
    assert frames == [frame[:12] + b"\x81\x00\x20\x07" + frame[12:]]
    assert (head, truncated) == (1, 0)
    assert struct.unpack_from("=I", ring._map, 0)[0] == 0  # TP_STATUS_KERNEL: the kernel's again


def test_ring_walk_refuses_a_ring_its_arguments_do_not_fit():
    ring = fake_ring([], 2)
    with pytest.raises(ValueError, match="do not fit"):
        SPEEDUPS.ring_batch(ring._view, 0, SLOT, 3, 8)
    with pytest.raises(BufferError):
        SPEEDUPS.ring_batch(b"read-only" * 100, 0, SLOT, 1, 8)


def test_ring_take_takes_the_plainest_frames_where_they_lie_and_hands_the_rest_over_in_order():
    """The fused walk: in-order frames taken from the ring (no bytes made for them), the
    first other frame and every later one handed over as bytes, every slot given back;
    what it did to the connection equals take_predicted on the same frames."""

    async def scenario(fused: bool) -> tuple[dict[str, Any], list[bytes], int, int, int]:
        async with opened() as (engine, conn, _, _, ack):

            def seg(seq: int, payload: bytes) -> bytes:
                return peer_frame(Segment(PEER_PORT, EMU_PORT, seq, ack, A | P, 900, payload=payload))

            frames = [
                seg(IRS + 1, b"abc"),
                seg(IRS + 4, b"defg"),
                seg(IRS + 20, b"later"),
                seg(IRS + 8, b"h"),
            ]
            now, touched = trio.current_time(), set()
            if fused:
                ring = fake_ring([(TP_STATUS_USER, f, len(f), 32, 0) for f in frames], 6)
                rest, head, truncated, taken = SPEEDUPS.ring_take(
                    ring._view, 0, SLOT, 6, 256, engine._conns, now, engine._t0, touched
                )
                handed_back = [struct.unpack_from("=I", ring._map, i * SLOT)[0] for i in range(4)]
                assert handed_back == [0, 0, 0, 0]
            else:
                taken = SPEEDUPS.take_predicted(frames, 0, engine._conns, now, engine._t0, touched)
                rest, head, truncated = frames[taken:], taken + 2, 0
            assert touched == {conn}
            state = {
                "core": core_snapshot(conn.core),
                "trace": snap(conn._trace),
                "last": snap(conn._last_msg),
            }
        return state, rest, head, truncated, taken

    fused_state, rest, head, truncated, taken = run_mocked(scenario, True)
    plain_state, plain_rest, *_ = run_mocked(scenario, False)
    assert (taken, head, truncated) == (2, 4, 0)
    assert rest == plain_rest and len(rest) == 2  # the out-of-order frame, then the one after it
    assert fused_state == plain_state
    assert fused_state["core"]["_stream"] == [("bytes", b"abc"), ("bytes", b"defg")]


def test_a_build_from_another_version_of_the_source_is_not_used(monkeypatch):
    from tcpemu import _accel

    assert _accel._load() is SPEEDUPS  # built from this source: used
    monkeypatch.setattr(SPEEDUPS, "SOURCE_SHA256", "0" * 64)
    with pytest.warns(RuntimeWarning, match="built from another version of _speedups.c"):
        assert _accel._load() is None
    monkeypatch.setenv("TCPEMU_PURE_PYTHON", "1")
    assert _accel._load() is None


@settings(max_examples=EXAMPLES, deadline=None)
@given(
    st.lists(st.binary(max_size=90), max_size=12),
    st.sampled_from([capture.INBOUND, capture.OUTBOUND]),
    st.integers(0, 100),
    st.integers(0, 2**64 - 1),
)
def test_compiled_pcapng_blocks_are_the_python_ones(tmp_path_factory, frames, direction, snaplen, ts):
    """The capture's blocks for a batch, compiled and in Python, byte for byte."""
    out = {}
    for compiled in (True, False):
        path = tmp_path_factory.mktemp("cap") / "c.pcapng"
        writer = capture.PcapngWriter(str(path), ifname="x", snaplen=max(snaplen, 1))
        with pytest.MonkeyPatch.context() as mp:
            if not compiled:
                mp.setattr(capture, "_EPB_BATCH", None)
            writer._write(frames, direction, ts)
        writer.close()
        out[compiled] = (path.read_bytes(), writer.frames)
    assert out[True] == out[False]
    assert capture._EPB_BATCH is SPEEDUPS.epb_batch


class _TraceThatFails(deque):
    """A connection's trace whose append fails once, at the record of a segment with ``bad``
    bytes: a defect met part way through taking a frame, in either path."""

    def append(self, record: Any) -> None:
        if len(record) > 7 and record[1] == "<" and record[7] == 3 and not getattr(self, "failed", False):
            self.failed = True
            raise RuntimeError("a defect while taking a frame")
        super().append(record)


def test_a_defect_while_taking_a_frame_is_counted_and_the_pump_goes_on_as_the_python_path_does():
    async def scenario(compiled: bool) -> dict[str, Any]:
        async with opened(compiled=compiled) as (engine, conn, peer, _, ack):
            conn._trace = _TraceThatFails(conn._trace, maxlen=conn._trace.maxlen)
            seq = IRS + 1
            for payload in (b"ab", b"cde", b"fghi"):  # the second one meets the defect
                peer.send(seq, ack, A, payload)
                seq += len(payload)
            await trio.testing.wait_all_tasks_blocked()
            result = {"core": core_snapshot(conn.core), "trace": snap(list(conn._trace))}
            result["engine"] = snap(engine.statistics())
            return result

    compiled, python = run_mocked(scenario, True), run_mocked(scenario, False)
    stats, python_stats = dict(compiled["engine"][1]), dict(python["engine"][1])
    # the one count that differs: the Python path counted that frame as predicted before its
    # trace step failed; the compiled part counts only the frames it finished
    assert stats.pop("frames_predicted") == ("int", python_stats.pop("frames_predicted")[1] - 1)
    assert stats == python_stats
    assert compiled["core"] == python["core"] and compiled["trace"] == python["trace"]
    assert stats["internal_errors"] == ("int", 1)
    # the segment after the defect was taken: the pump went on
    assert compiled["core"]["_stream"][-1] == ("bytes", b"fghi")


def test_ring_take_says_where_a_defect_stopped_it():
    """The slots taken before the failing one are handed back and counted; the failing
    one stays the reader's, for the Python path to read again."""

    async def scenario() -> None:
        async with opened() as (engine, conn, _, _, ack):
            conn._trace = _TraceThatFails(conn._trace, maxlen=conn._trace.maxlen)
            frames = [
                peer_frame(Segment(PEER_PORT, EMU_PORT, IRS + 1, ack, A, 900, payload=b"ab")),
                peer_frame(Segment(PEER_PORT, EMU_PORT, IRS + 3, ack, A, 900, payload=b"cde")),
            ]
            ring = fake_ring([(TP_STATUS_USER, f, len(f), 32, 0) for f in frames], 4)
            with pytest.raises(RuntimeError, match="a defect") as caught:
                SPEEDUPS.ring_take(
                    ring._view, 0, SLOT, 4, 256, engine._conns, trio.current_time(), engine._t0, set()
                )
            assert (caught.value.tcpemu_taken, caught.value.tcpemu_head) == (1, 1)
            statuses = [struct.unpack_from("=I", ring._map, i * SLOT)[0] for i in range(2)]
            assert statuses == [0, TP_STATUS_USER]

    run_mocked(scenario)
