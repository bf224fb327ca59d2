"""The instrument at its edges: time, cancellation, bad arguments, ownership, lifecycle, traces.

Each test here failed on the build before its fix (see the defect named in
its docstring).  No network: the engine runs on a MemoryLink under trio's
autojump clock.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
from unittest import mock

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpemu
from tcpemu import (
    CLIENT,
    ConnectionBrokenError,
    ConnectionClosedError,
    MemoryLink,
    SegmentKind,
    TcpemuTimeoutError,
    TcpFlags,
    TcpOption,
    UsageError,
)
from tcpemu.core import ConnectionCore, seq_diff
from tcpemu.wire import OptionKind, Segment, build_frame, parse_frame_untrusted

from .helpers import (
    EMU_IP,
    EMU_MAC,
    EMU_PORT,
    PEER_IP,
    PEER_MAC,
    PEER_PORT,
    Peer,
    open_server,
    server,
)

A, S, F, R, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH


def tsval(seg: Segment) -> int | None:
    opt = seg.option(OptionKind.TIMESTAMP)
    return None if opt is None else opt.value()[0]  # type: ignore[index]


def ts_core() -> ConnectionCore:
    """An established core with timestamps agreed, at t=0."""
    core = ConnectionCore(tcpemu.SERVER, src_port=EMU_PORT, dst_port=None, isn=1000, timestamps=True)
    syn = Segment(PEER_PORT, EMU_PORT, 5000, 0, S, 1000, options=(TcpOption.timestamps(77, 0),))
    core.receive(syn, 0.0)
    core.syn_ack(0.0)
    core.receive(Segment(PEER_PORT, EMU_PORT, 5001, 1001, A, 1000), 0.0)
    return core


# ------------------------------------------------------------- 1. time


def test_pure_ack_after_data_never_carries_an_older_tsval():
    """Defect 1: an ACK (or RST) built without now took the last receive time's TSval."""
    core = ts_core()
    data = core.send(b"x" * 10, now=5.0)
    ack = core.ack_now(5.0)
    rst = core.rst(5.0)
    assert tsval(data) == tsval(ack) == tsval(rst) == tsval(data)
    with pytest.raises(TypeError):
        core.ack_now()  # type: ignore[call-arg]  # now is not optional any more


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["data", "ack", "fin", "rst", "recv"]), st.floats(-5.0, 5.0)),
        min_size=1,
        max_size=40,
    )
)
def test_auto_tsvals_never_decrease(calls):
    """Whatever order the calls come in, and even when a caller's clock steps back,
    the TSvals the core sends on its own never go down (RFC 7323 PAWS)."""
    core = ts_core()
    now, sent = 1.0, []
    peer_seq = 5001
    for op, step in calls:
        now = max(0.0, now + step)
        if op == "data":
            sent.append(core.send(b"d", now=now))
        elif op == "ack":
            sent.append(core.ack_now(now))
        elif op == "fin":
            sent.append(core.send(flags=F | A, now=now))
        elif op == "rst":
            sent.append(core.rst(now))
        else:
            core.receive(Segment(PEER_PORT, EMU_PORT, peer_seq, core.snd_nxt, A | P, 1000, payload=b"y"), now)
            peer_seq += 1
    values = [v for v in map(tsval, sent) if v is not None]
    assert len(values) == len(sent), "timestamps were agreed: every segment carries them"
    assert all(seq_diff(b, a) >= 0 for a, b in itertools.pairwise(values))


# ---------------------------------------------------- 2, 3. cancellation


SENDS = {
    "send_msg": lambda conn: conn.send_msg(b"data"),
    "send_ack": lambda conn: conn.send_ack(),
    "send_rst": lambda conn: conn.send_rst(),
    "send_fin": lambda conn: conn.send_fin(timeout=1),
    "send_segments": lambda conn: conn.send_segments(conn.segment(b"spec")),
    "send_frames": lambda conn: conn.send_frames([b"\x00" * 60]),
    "send_data": lambda conn: conn.send_data(b"stream"),
}


@pytest.mark.parametrize("name", sorted(SENDS))
async def test_a_send_cancelled_before_it_starts_sends_nothing(engine_and_peer, autojump_clock, name):
    """Defect 2: send_msg in a cancelled scope put the frame on the wire, moved
    next_seqn, then raised Cancelled.  trio's rule: it happened and returned,
    or it did not happen and raised."""
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    before = (conn.next_seqn, conn.last_seqn_sent, conn.statistics().segments_sent)
    frames_before = engine.statistics().frames_sent
    with trio.CancelScope() as scope:
        scope.cancel()
        await SENDS[name](conn)
    assert scope.cancelled_caught
    assert (conn.next_seqn, conn.last_seqn_sent, conn.statistics().segments_sent) == before
    assert engine.statistics().frames_sent == frames_before
    peer.expect_nothing()


@pytest.mark.parametrize("name", ["send_msg", "send_ack", "send_rst", "send_segments", "send_frames"])
async def test_a_send_that_went_out_returns(engine_and_peer, autojump_clock, name):
    """The other half of the rule: once on the wire, the call returns even if
    the scope is cancelled right then (a shielded checkpoint after it)."""
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    sent = engine.statistics().frames_sent
    async with trio.open_nursery() as nursery:

        async def send_then_cancelled() -> None:
            await SENDS[name](conn)  # must not raise Cancelled: the frame left
            nursery.cancel_scope.cancel()

        nursery.start_soon(send_then_cancelled)
    assert engine.statistics().frames_sent == sent + 1


async def test_cancelled_recv_data_loses_nothing(engine_and_peer, autojump_clock):
    """Defect 3: bytes read before a cancel were ACKed and thrown away."""
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)

    async def peer_sends() -> None:
        for i in range(10):
            peer.send(7001 + i, iss1, A | P, str(i).encode())
            await trio.sleep(0.05)
        peer.send(7011, iss1, F | A)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer_sends)
        with trio.move_on_after(0.22) as scope:
            await conn.recv_data(idle=1)
        assert scope.cancelled_caught
    assert await conn.recv_data(idle=1) == b"0123456789"


@settings(max_examples=60, deadline=None)
@given(cancel_at=st.floats(0.0, 0.6), chunk=st.integers(1, 5))
def test_cancelling_any_reader_at_any_time_loses_no_byte(cancel_at, chunk):
    """recv_data, recv_exactly and wait_msg cancelled at a random moment:
    whatever each returned plus what a final read gets is the whole stream,
    once, in order."""

    async def main() -> None:
        emu_link, peer_link = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu_link, seed=1) as engine:
            peer = Peer(peer_link)
            conn, iss1 = await open_server(engine, peer)
            stream = bytes(range(48, 58)) * 3
            got = bytearray()

            async def peer_sends() -> None:
                for i in range(0, len(stream), chunk):
                    peer.send(7001 + i, iss1, A | P, stream[i : i + chunk])
                    await trio.sleep(0.02)
                peer.send(7001 + len(stream), iss1, F | A)

            async def readers() -> None:
                # the stream readers (recv_msg hands out segments, a view that
                # overlaps the stream's: it has its own test below)
                while not (conn.fin_got and conn.core.stream_available() == 0):
                    await conn.wait_msg()
                    if conn.core.stream_available():
                        got.extend(await conn.recv_exactly(1, ack=False))
                    with contextlib.suppress(TcpemuTimeoutError):  # nothing within idle: nothing read
                        got.extend(await conn.recv_data(idle=0.01, ack=False))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_sends)
                with trio.move_on_after(cancel_at):
                    await readers()
            with trio.move_on_after(5):
                got.extend(await conn.recv_data(idle=1, ack=False))
            assert bytes(got) == stream

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=40, deadline=None)
@given(cancel_at=st.floats(0.0, 0.3))
def test_cancelling_recv_msg_at_any_time_loses_no_segment(cancel_at):
    """A popped message is always returned: nothing between the pop and the return can raise."""

    async def main() -> None:
        emu_link, peer_link = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu_link, seed=1) as engine:
            peer = Peer(peer_link)
            conn, iss1 = await open_server(engine, peer)
            got: list[bytes] = []

            async def peer_sends() -> None:
                for i in range(10):
                    peer.send(7001 + i, iss1, A | P, bytes([65 + i]))
                    await trio.sleep(0.02)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer_sends)
                with trio.move_on_after(cancel_at):
                    while True:
                        got.append((await conn.recv_msg(ack=False)).payload)
            while len(got) < 10:
                got.append((await conn.recv_msg(timeout=5, ack=False)).payload)
            assert b"".join(got) == b"ABCDEFGHIJ"

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# ------------------------------------------------------- 4. wait_open


def client_without_mac(engine: tcpemu.Engine) -> tcpemu.Connection:
    """A CLIENT whose wait_open must find the peer's MAC with ARP first."""
    return engine.connection(
        CLIENT,
        local=(str(EMU_IP), EMU_PORT),
        remote=(str(PEER_IP), PEER_PORT),
        local_mac=EMU_MAC,
        remote_mac=None,
    )


async def test_client_without_mac_times_out_once_with_a_tcpemu_error(engine_and_peer, autojump_clock):
    """Defect 4: resolution took the whole timeout, then trio.TooSlowError (empty) leaked."""
    engine, _ = engine_and_peer
    conn = client_without_mac(engine)
    start = trio.current_time()
    with pytest.raises(TcpemuTimeoutError, match=r"resolving 198\.18\.0\.1's MAC") as info:
        await conn.wait_open(timeout=2)
    assert trio.current_time() - start == pytest.approx(2, abs=0.01)
    assert not isinstance(info.value, trio.TooSlowError)
    assert conn.last_seqn_sent is None  # no SYN went out


async def test_client_mac_resolved_by_arp_is_traced_as_such(engine_and_peer, autojump_clock):
    """Defect 13 (part): the trace said "learnt from the peer" for an ARP answer."""
    from tcpemu import neighbour

    engine, peer = engine_and_peer
    conn = client_without_mac(engine)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        with trio.fail_after(1):
            while peer.link.recv_nowait() is None:  # the ARP question
                await trio.lowlevel.wait_readable(peer.link.fileno())
        peer.link.send(neighbour.arp_reply(PEER_MAC, PEER_IP, EMU_MAC, EMU_IP))
        syn = await peer.expect()
        peer.send(7000, syn.seq + 1, S | A)
    assert any("resolved with ARP/NDP" in line for line in conn.trace())
    assert not any("learnt from the peer" in line for line in conn.trace())


# ------------------------------------------------------------- 5. flags


async def test_flags_that_cannot_be_sent_are_refused(engine_and_peer, autojump_clock):
    """Defect 5: flags=0x210 was recorded as sent while 0x10 went out; a reliable
    retransmit of it raised IndexError in the timer."""
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer, reliable=True)
    with pytest.raises(UsageError, match=r"flags must be 0\.\.0x1FF"):
        await conn.send_msg(b"x", flags=0x210)
    assert conn.statistics().segments_sent == 1  # the SYN-ACK only
    # reserved bits stay possible where they are meant to be: a described segment
    frames = await conn.send_segments(conn.segment(b"r", flags=0x210))
    assert parse_frame_untrusted(frames[0]).segment.flags == A
    assert frames[0][14 + 20 + 12] & 0x0E == 0x02  # the reserved bit 9 is on the wire
    from tcpemu import malform

    assert malform.set_tcp_checksum(frames[0], 0) != frames[0]  # (a checksum is there)
    assert tcp_checksum_ok(frames[0])


def tcp_checksum_ok(frame: bytes) -> bool:
    """The ones' complement sum over the IPv4 pseudo-header and the segment is 0xFFFF."""
    ip, tcp = frame[14:34], frame[34:]
    pseudo = ip[12:20] + bytes([0, 6]) + len(tcp).to_bytes(2, "big")
    data = pseudo + tcp + b"\0" * (len(tcp) % 2)
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


# ---------------------------------------------------------- 6. floats


async def test_a_float_window_is_refused_and_never_reaches_the_pump(engine_and_peer, autojump_clock):
    """Defect 6: listen(window=1.5) or conn.window = 1.5 killed the pump or the timers."""
    engine, peer = engine_and_peer
    with pytest.raises(UsageError, match="window"):
        engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC, window=1.5)  # type: ignore[arg-type]
    conn, iss1 = await open_server(engine, peer, reliable=True)
    with pytest.raises(UsageError, match="window"):
        conn.window = 1.5  # type: ignore[assignment]
    with pytest.raises(UsageError, match="rto"):
        engine.rto = 0
    peer.send(7001, iss1, A | P, b"still alive")
    assert (await conn.recv_msg(timeout=1)).payload == b"still alive"


async def test_a_defect_in_one_connection_does_not_stop_the_pump(engine_and_peer, autojump_clock, caplog):
    """Per-connection failure is counted and logged; the other connections live on."""
    engine, peer = engine_and_peer
    sick, iss1 = await open_server(engine, peer)

    class BrokenCore(ConnectionCore):
        __slots__ = ()

        def receive(self, *args: object) -> None:  # type: ignore[override]
            raise RuntimeError("a defect")

        receive_predicted = receive  # type: ignore[assignment]

    sick.core.__class__ = BrokenCore
    peer.send(7001, iss1, A | P, b"lost")
    healthy = server(engine, remote_port=PEER_PORT + 1)
    peer.send(9000, flags=S, src_port=PEER_PORT + 1)
    assert (await healthy.wait_msg(timeout=1)).flags == S
    assert engine.statistics().internal_errors == 1
    assert "could not be handled" in caplog.text


# ---------------------------------------------------- 7. bad arguments


BAD_CALLS = {
    "urgent 70000": lambda c, e: c.send_msg(b"x", urgent=70000),
    "options bytes": lambda c, e: c.send_msg(b"x", options=b"\x01\x01"),
    "segment window -5": lambda c, e: c.segment(window=-5),
    "segment ttl 300": lambda c, e: c.segment(ttl=300),
    "spec changed after": lambda c, e: _changed_spec(c),
    "timeout nan": lambda c, e: c.recv_msg(timeout=math.nan),
    "timeout str": lambda c, e: c.recv_msg(timeout="1"),
    "idle 0": lambda c, e: c.recv_data(idle=0),
    "local_mac bytearray 5": lambda c, e: e.connection(
        CLIENT, local=(str(EMU_IP), 1), remote=(str(PEER_IP), 2), local_mac=bytearray(5), remote_mac=PEER_MAC
    ),
    "local_mac None": lambda c, e: e.connection(
        CLIENT, local=(str(EMU_IP), 1), remote=(str(PEER_IP), 2), local_mac=None, remote_mac=PEER_MAC
    ),
    "local 1-tuple": lambda c, e: e.connection(
        CLIENT, local=(str(EMU_IP),), remote=(str(PEER_IP), 2), local_mac=EMU_MAC, remote_mac=PEER_MAC
    ),
    "port True": lambda c, e: e.connection(
        CLIENT, local=(str(EMU_IP), True), remote=(str(PEER_IP), 2), local_mac=EMU_MAC, remote_mac=PEER_MAC
    ),
    "max_queue 0": lambda c, e: e.connection(
        CLIENT,
        local=(str(EMU_IP), 1),
        remote=(str(PEER_IP), 2),
        local_mac=EMU_MAC,
        remote_mac=PEER_MAC,
        max_queue=0,
    ),
    "address int": lambda c, e: e.listen((5, 80), local_mac=EMU_MAC),
    "backlog float": lambda c, e: e.listen((str(EMU_IP), 81), local_mac=EMU_MAC, backlog=1.5),
    "option kind 300": lambda c, e: TcpOption(300),
    "mss option 70000": lambda c, e: TcpOption.mss(70000),
    "flags str": lambda c, e: c.send_msg(b"", flags="SYN"),
    "recv_exactly -1": lambda c, e: c.recv_exactly(-1),
    "ackn too big": lambda c, e: c.send_ack(1 << 32),
}


def _changed_spec(conn: tcpemu.Connection):
    spec = conn.segment(b"x")
    spec.window = 1 << 20  # changed after segment() checked it: send_segments checks again
    return conn.send_segments(spec)


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
async def test_bad_arguments_are_usage_errors_naming_them(engine_and_peer, autojump_clock, case):
    """Defect 7: struct.error, IndexError, dpkt.PackError and silent defaults leaked."""
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    with pytest.raises(UsageError) as info:
        result = BAD_CALLS[case](conn, engine)
        if hasattr(result, "__await__"):
            await result
    assert "got" in str(info.value)  # says what it was given


@pytest.mark.parametrize(
    "kwargs",
    [{"trace_depth": -1}, {"rto": 0}, {"max_queue": 0}, {"busy_poll": math.nan}, {"seed": "x"}],
    ids=str,
)
async def test_open_engine_refuses_bad_settings_before_opening_anything(kwargs):
    emu_link, peer_link = MemoryLink.pair()
    with pytest.raises(UsageError, match=next(iter(kwargs))):
        async with tcpemu.open_engine(link=emu_link, **kwargs):
            pass
    peer_link.close()
    emu_link.close()


# ---------------------------------------------------------- 8. ownership


async def test_listen_and_a_server_connection_on_one_port_refused_either_order(engine_and_peer):
    """Defect 8: listen() then connection(SERVER) on its port was accepted."""
    engine, _ = engine_and_peer
    engine.listen((str(EMU_IP), 30000), local_mac=EMU_MAC)
    with pytest.raises(UsageError, match="listener"):
        server_on(engine, 30000)
    server_on(engine, 30001)
    with pytest.raises(UsageError, match="listens"):
        engine.listen((str(EMU_IP), 30001), local_mac=EMU_MAC)


def server_on(engine: tcpemu.Engine, port: int) -> tcpemu.Connection:
    return engine.connection(
        tcpemu.SERVER,
        local=(str(EMU_IP), port),
        remote=(str(PEER_IP), None),
        local_mac=EMU_MAC,
        remote_mac=None,
    )


# ---------------------------------------------------------- 9. lifecycle


async def test_calls_after_the_engine_closed_say_so(autojump_clock):
    """Defect 9: they said "closed (destroyed) by the test"."""
    emu_link, peer_link = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu_link, seed=3) as engine:
        conn = server(engine)
    with pytest.raises(ConnectionClosedError, match="the engine is closed"):
        await conn.send_msg(b"x")
    with pytest.raises(ConnectionClosedError, match="the engine is closed"):
        await conn.recv_msg(timeout=1)
    peer_link.close()


async def test_send_fin_after_a_reset_sends_nothing(engine_and_peer, autojump_clock):
    """Defect 9: the FIN went on the wire before ConnectionBrokenError."""
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)
    peer.send(7001, iss1, R | A)
    await conn.recv_msg(timeout=1)
    sent = engine.statistics().frames_sent
    with pytest.raises(ConnectionBrokenError):
        await conn.send_fin(timeout=1)
    assert engine.statistics().frames_sent == sent
    peer.expect_nothing()


# ------------------------------------------------------------ 13. traces


async def test_the_trace_says_an_rst_was_ignored_and_why(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)
    peer.send(7001 + 100_000, iss1, R | A)  # far outside our window
    msg = await conn.recv_msg(timeout=1)
    assert msg.flags & R and not conn.rst_got
    lines = conn.trace()
    rst_line = next(line for line in lines if " R" in line)
    assert "RST ignored" in rst_line and "retransmit" not in rst_line
    assert any("ignored: seq outside the receive window" in line for line in lines)


async def test_the_trace_calls_a_probe_a_probe(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)
    peer.send(7001, iss1, A | P, b"abc")
    await conn.recv_msg(timeout=1)
    peer.send(7003, iss1, A)  # seq = snd_una - 1 of the peer: keepalive / zero-window probe
    msg = await conn.recv_msg(timeout=1)
    assert msg.kind is SegmentKind.RETRANSMIT
    assert conn.trace()[-1].endswith("[probe]")


async def test_the_trace_gives_sack_blocks_relative_as_seq_and_ack(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)
    await conn.send_msg(b"x" * 300)
    peer.send(7001, iss1, A, options=(TcpOption.sack([(iss1 + 100, iss1 + 200)]),))
    await conn.recv_msg(timeout=1)
    assert "sack 101:201" in conn.trace()[-1]


async def test_received_frames_to_a_mac_are_what_the_capture_shows(engine_and_peer, autojump_clock):
    """A frame to another MAC is on the wire (captured) but not taken: the trace has no line."""
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)
    lines = len(conn.trace())
    seg = Segment(PEER_PORT, EMU_PORT, 7001, iss1, A | P, 1000, payload=b"z")
    from tcpemu.wire import Frame

    peer.link.send(build_frame(Frame(PEER_MAC, b"\x02" * 6, PEER_IP, EMU_IP, seg)))
    with trio.move_on_after(1):
        await conn.recv_msg()
    assert len(conn.trace()) == lines


async def test_the_ts_start_value_is_the_tests_choice(engine_and_peer, autojump_clock):
    """issue 15: a connection's first TSval is chosen at creation."""
    engine, peer = engine_and_peer
    conn = server(engine, timestamps=True, ts_start=1000)
    peer.send(7000, flags=S, options=(TcpOption.timestamps(5, 0),))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        synack = await peer.expect()
        peer.send(7001, synack.seq + 1, options=(TcpOption.timestamps(6, 1000),))
    assert tsval(synack) == 1000
    with pytest.raises(UsageError, match="ts_start"):
        server(engine, remote_port=1, ts_start=-1)


# ------------------------------------------------ a device queue that is full


class _Congested:
    """A socket whose device queue is full for the first ``busy`` sends (ENOBUFS)."""

    def __init__(self, busy: int) -> None:
        self.busy, self.sent = busy, []

    def send(self, frame: bytes) -> None:
        if self.busy:
            self.busy -= 1
            raise OSError(errno.ENOBUFS, "No buffer space available")
        self.sent.append(frame)


def test_a_frame_the_device_refuses_for_a_moment_is_sent_again():
    """ENOBUFS (a veth whose peer's backlog is full) killed the pump: now it waits, bounded."""
    from tcpemu import _io

    sock = _Congested(busy=3)
    _io._send(sock, b"frame", "test link")  # type: ignore[arg-type]
    assert sock.sent == [b"frame"]
    stuck = _Congested(busy=10**9)
    with mock.patch.object(_io, "SEND_STALL", 0.02), pytest.raises(_io.FrameDropped):
        _io._send(stuck, b"frame", "test link")  # type: ignore[arg-type]


async def test_a_dropped_frame_is_counted_and_the_engine_goes_on(engine_and_peer, autojump_clock):
    from tcpemu import _io

    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    with mock.patch.object(engine._link, "send", side_effect=_io.FrameDropped("test link")):
        await conn.send_msg(b"lost in the queue")  # returns: lost as on a congested wire
    assert engine.statistics().tx_errors == 1
    await conn.send_msg(b"through")
    assert (await peer.expect()).payload == b"through"
