"""The engine on an in-memory link, under trio's autojump clock: no network needed."""

from __future__ import annotations

import copy
import gc
import ipaddress
import logging
import os
from unittest import mock

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import tcpemu
from tcpemu import (
    CLIENT,
    SERVER,
    ConnectionBrokenError,
    ConnectionClosedError,
    MemoryLink,
    SegmentKind,
    TcpemuTimeoutError,
    TcpFlags,
    TcpState,
    UsageError,
    WouldBlock,
    _engine,
    _receive_path,
)
from tcpemu._engine import BATCH, FAIR_BATCHES
from tcpemu.wire import FLAGS, Frame, Segment, TcpOption, build_frame, parse_frame_untrusted

from .helpers import (
    EMU_IP,
    EMU_MAC,
    EMU_PORT,
    PEER_IP,
    PEER_MAC,
    PEER_PORT,
    STATE_FIELDS,
    A,
    F,
    P,
    Peer,
    R,
    S,
    open_server,
    peer_frame,
    server,
)


async def test_server_handshake_answers_only_on_wait_open(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn = server(engine)
    peer.send(7000, flags=S)
    syn = await conn.wait_msg(timeout=1)
    assert syn.flags == S and conn.state is TcpState.LISTEN
    await trio.sleep(10)  # virtual time: nothing is answered while the test holds back
    peer.expect_nothing()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        synack = await peer.expect()
        peer.send(7001, synack.seq + 1)
    assert conn.first_seqn_got == 7000 and conn.next_ackn == 7001
    assert conn.first_seqn_sent == synack.seq and conn.next_seqn == synack.seq + 1


async def test_client_sends_syn_at_once_and_acks_syn_ack(engine_and_peer):
    engine, peer = engine_and_peer
    conn = engine.connection(
        CLIENT,
        local=(str(EMU_IP), EMU_PORT),
        remote=(str(PEER_IP), PEER_PORT),
        local_mac=EMU_MAC,
        remote_mac=PEER_MAC,
    )
    syn = await peer.expect()
    assert syn.flags == S and syn.option(2).value() == 1460
    peer.send(9000, syn.seq + 1, S | A)
    await conn.wait_open(timeout=1)
    ack = await peer.expect()
    assert (ack.flags, ack.seq, ack.ack) == (A, syn.seq + 1, 9001)
    assert conn.state is TcpState.ESTABLISHED


async def test_send_msg_and_recv_msg_with_ack(engine_and_peer):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    await conn.send_msg(b"hello")
    data = await peer.expect()
    assert (data.seq, data.flags, data.payload) == (snd, A | P, b"hello")
    peer.send(7001, snd + 5, A | P, b"world")
    msg = await conn.recv_msg(timeout=1)
    assert (msg.payload, msg.kind, msg.seq) == (b"world", SegmentKind.EXPECTED, 7001)
    ack = await peer.expect()
    assert (ack.flags, ack.ack) == (A, 7006)
    assert conn.last_ackn_got == snd + 5 and conn.last_win_got == 1000


async def test_recv_msg_does_not_ack_pure_acks(engine_and_peer):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    peer.send(7001, snd)
    msg = await conn.recv_msg(timeout=1)
    assert msg.seq_len == 0
    peer.expect_nothing()


async def test_recv_msg_skip_retransmits(engine_and_peer):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    peer.send(7001, snd, A, b"aaa")
    peer.send(7001, snd, A, b"aaa")
    peer.send(7004, snd, A, b"bbb")
    await conn.wait_until(lambda c: c.statistics().segments_received >= 4, timeout=1)
    first = await conn.recv_msg(ack=False, skip_retransmits=True)
    second = await conn.recv_msg(ack=False, skip_retransmits=True)
    assert (first.payload, second.payload) == (b"aaa", b"bbb")
    with pytest.raises(WouldBlock):
        conn.recv_msg_nowait()


async def test_recv_data_reassembles_and_acks(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    peer.send(7004, snd, A, b"def")
    peer.send(7001, snd, A, b"abc")
    data = await conn.recv_data(idle=0.2)
    assert data == b"abcdef"
    ack = await peer.expect()
    assert ack.ack == 7007


async def test_recv_data_stops_at_fin(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    peer.send(7001, snd, A | F, b"last")
    assert await conn.recv_data(idle=100) == b"last"
    assert conn.fin_got and conn.next_ackn == 7006 and conn.state is TcpState.CLOSE_WAIT


async def test_recv_data_with_nothing_is_a_timeout_naming_it(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    with pytest.raises(TcpemuTimeoutError, match=r"recv_data: no data within idle 0.5 s; nothing arrived"):
        await conn.recv_data(idle=0.5)


async def test_timeout_says_what_arrived_instead(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    await conn.send_msg(b"x")
    peer.send(7001, snd)  # an ACK, but not of our FIN
    await conn.wait_until(lambda c: c.statistics().segments_received >= 3, timeout=1)
    with pytest.raises(TcpemuTimeoutError) as info:
        await conn.send_fin(timeout=2)
    assert "waiting for the ACK of our FIN" in str(info.value)
    assert "nothing arrived" in str(info.value)


async def test_wait_open_timeout_message(engine_and_peer, autojump_clock):
    engine, _peer = engine_and_peer
    conn = server(engine)
    with pytest.raises(
        TcpemuTimeoutError, match=r"wait_open .*the peer's SYN.* timed out after 3 s; nothing arrived"
    ):
        await conn.wait_open(timeout=3)


async def test_rst_breaks_waits(engine_and_peer):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    async with trio.open_nursery() as nursery:

        async def fin_then_rst():
            await peer.expect()  # our FIN
            peer.send(7001, snd, R | A)

        nursery.start_soon(fin_then_rst)
        with pytest.raises(ConnectionBrokenError, match="peer reset"):
            await conn.send_fin(timeout=5)
    assert conn.rst_got and conn.state is TcpState.CLOSED
    with pytest.raises(ConnectionBrokenError):
        await conn.recv_data(idle=1)


async def test_destroy_sends_nothing_and_closes(engine_and_peer):
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    await conn.aclose()
    peer.expect_nothing()
    assert engine.statistics().connections == 0
    with pytest.raises(ConnectionClosedError, match="closed"):
        await conn.send_msg(b"x")
    # The address is no longer ours: the filter refuses the frame before the
    # pump sees it.  A frame for another connection, sent after it on the same
    # ordered link, shows when the pump has had its chance.
    other = engine.connection(
        SERVER,
        local=("198.18.0.3", EMU_PORT),
        remote=(str(PEER_IP), None),
        local_mac=EMU_MAC,
        remote_mac=PEER_MAC,
    )
    received = engine.statistics().frames_received
    peer.send(7001, 0, A, b"late")
    seg = Segment(PEER_PORT, EMU_PORT, 1, 0, S, 1000)
    peer.link.send(build_frame(Frame(PEER_MAC, EMU_MAC, PEER_IP, ipaddress.ip_address("198.18.0.3"), seg)))
    await other.wait_msg(timeout=1)
    assert engine.statistics().frames_received == received + 1
    assert engine.statistics().frames_unmatched == 0


async def test_malformed_and_foreign_frames_are_counted_and_the_pump_goes_on(engine_and_peer, caplog):
    engine, peer = engine_and_peer
    caplog.set_level(logging.DEBUG, "tcpemu.engine")
    conn, snd = await open_server(engine, peer)
    good = bytearray(
        build_frame(
            Frame(PEER_MAC, EMU_MAC, PEER_IP, EMU_IP, Segment(PEER_PORT, EMU_PORT, 7001, snd, A, 1000))
        )
    )
    bad_offset = bytearray(good)
    bad_offset[46] = 0x30  # data offset 12 bytes
    bad_option = build_frame(
        Frame(
            PEER_MAC,
            EMU_MAC,
            PEER_IP,
            EMU_IP,
            Segment(PEER_PORT, EMU_PORT, 7001, snd, A, 1000, options=(TcpOption(8, b"\x00" * 8),)),
        )
    )
    bad_option = bad_option[:54] + b"\x08\x20" + bad_option[56:]  # option length past the header
    other_port = build_frame(
        Frame(PEER_MAC, EMU_MAC, PEER_IP, EMU_IP, Segment(PEER_PORT + 1, EMU_PORT, 1, 0, A, 1000))
    )
    truncated = bytes(good[:40])
    for raw in (bytes(bad_offset), bad_option, other_port, truncated):
        peer.link.send(raw)
    peer.send(7001, snd, A | P, b"still here")
    msg = await conn.recv_msg(timeout=1)
    assert msg.payload == b"still here"
    stats = engine.statistics()
    # the truncated frame still holds the bytes the BPF filter reads, so it reaches the parser
    assert stats.malformed == {"tcp-data-offset": 1, "tcp-option": 1, "ip-length": 1}
    assert stats.frames_unmatched == 1  # our address, nobody's port
    assert "malformed frame (tcp-option)" in caplog.text


async def test_queue_overflow_is_reported(engine_and_peer, caplog):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer, max_queue=3)
    conn.core.read_stream()
    for i in range(5):
        peer.send(7001 + i, snd, A, b"x")
    await conn.wait_until(lambda c: c.next_ackn == 7006, timeout=1)
    assert conn.statistics().queue_overflows == 2
    assert engine.statistics().queue_overflows == 2
    assert "receive queue full" in caplog.text
    assert await conn.recv_data(idle=0.01) == b"xxxxx"


async def test_duplicate_connection_and_bad_arguments(engine_and_peer):
    engine, _ = engine_and_peer
    server(engine)
    with pytest.raises(UsageError, match="exists already"):
        server(engine)
    with pytest.raises(UsageError, match="not an IP address"):
        engine.connection(
            SERVER, local=("nope", 1), remote=("198.18.0.1", None), local_mac=EMU_MAC, remote_mac=PEER_MAC
        )
    with pytest.raises(UsageError, match="mode must be"):
        engine.connection(
            "server",
            local=(str(EMU_IP), 2),
            remote=("198.18.0.1", None),
            local_mac=EMU_MAC,
            remote_mac=PEER_MAC,
        )  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="MAC"):
        engine.connection(
            SERVER, local=(str(EMU_IP), 3), remote=("198.18.0.1", None), local_mac="zz", remote_mac=PEER_MAC
        )


async def test_open_engine_lets_the_body_exception_out_unwrapped():
    emu_link, peer_link = MemoryLink.pair()
    with pytest.raises(KeyError, match="boom"):
        async with tcpemu.open_engine(link=emu_link):
            raise KeyError("boom")
    peer_link.close()


async def test_engine_closed_makes_calls_fail_clearly():
    emu_link, peer_link = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu_link) as engine:
        conn = server(engine)
    with pytest.raises(ConnectionClosedError):
        await conn.wait_open(timeout=1)
    with pytest.raises(ConnectionClosedError, match="engine is closed"):
        server(engine)
    peer_link.close()


async def test_isns_are_deterministic_for_a_seed():
    isns = []
    for _ in range(2):
        emu_link, peer_link = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu_link, seed=7) as engine:
            isns.append(server(engine).core.iss)
        peer_link.close()
    assert isns[0] == isns[1]


async def test_listener_answers_syns_from_the_pump_and_hands_out_connections(engine_and_peer):
    engine, peer = engine_and_peer
    listener = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC)
    peer.send(7000, flags=S)
    synack = await peer.expect()
    assert synack.flags == S | A and synack.ack == 7001
    peer.send(7001, synack.seq + 1)
    conn = await listener.accept(timeout=1)
    assert conn.state is TcpState.ESTABLISHED and conn.remote == (str(PEER_IP), PEER_PORT)
    assert conn.remote_mac == PEER_MAC  # learnt from the SYN
    assert conn.statistics().queued_messages == 0  # the handshake is not left in the queue
    await conn.send_msg(b"hi")
    assert (await peer.expect()).payload == b"hi"
    assert listener.statistics().accepted == 1


async def test_listener_handshake_ack_takes_header_prediction(engine_and_peer):
    engine, peer = engine_and_peer
    listener = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC, window=30_000)
    linux_syn = (
        TcpOption.mss(1460),
        TcpOption.sack_permitted(),
        TcpOption.timestamps(100, 0),
        TcpOption(1),
        TcpOption.wscale(7),
    )
    peer.send(7000, flags=S, options=linux_syn)
    synack = await peer.expect()
    assert synack.flags == S | A and synack.option(8).value() == (0, 100)  # echoes the SYN's TSval
    assert engine.statistics().frames_predicted == 0  # a SYN never is
    accepting = trio.Event()
    got: list[tcpemu.Connection] = []

    async def accept() -> None:
        accepting.set()
        got.append(await listener.accept())  # no timeout: no cancel scope of its own

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        await accepting.wait()
        peer.send(7001, synack.seq + 1, options=(TcpOption(1), TcpOption(1), TcpOption.timestamps(101, 0)))
    (conn,) = got
    assert engine.statistics().frames_predicted == 1  # the handshake's ACK
    assert conn.state is TcpState.ESTABLISHED and conn.statistics().queued_messages == 0
    # the SYN-ACK offered no window scale (listen() has none), so the window stays unscaled
    assert (conn.core.last_tsval_got, conn.core.ts_recent, conn.last_win_got) == (101, 101, 1000)
    assert listener.statistics().waiting == 0 and listener.statistics().accepted == 1
    await conn.send_msg(b"hi")
    out = await peer.expect()
    assert out.payload == b"hi" and out.option(8).value()[1] == 101


async def test_a_syn_from_port_0_makes_a_connection_and_the_pump_goes_on(engine_and_peer):
    # remote data, not local misuse: it must not reach the core's argument checks
    engine, peer = engine_and_peer
    listener = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC)
    for port in (0, 40000):
        peer.send(100, flags=S, src_port=port)
        synack = await peer.expect()
        assert synack.dst_port == port and synack.flags == S | A
        peer.send(101, synack.seq + 1, src_port=port)
        conn = await listener.accept(timeout=1)
        assert conn.remote == (str(PEER_IP), port) and conn.state is TcpState.ESTABLISHED
    assert engine._broken is None and listener.statistics().accepted == 2


async def test_listener_connections_follow_the_engine_settings_of_their_syn(engine_and_peer):
    engine, peer = engine_and_peer
    listener = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC)
    got = []
    for port, reliable, rto in ((40001, False, 0.2), (40002, True, 0.7)):
        engine.reliable, engine.rto = reliable, rto  # changed after listen(): the next SYN sees it
        peer.send(100, flags=S, src_port=port)
        synack = await peer.expect()
        peer.send(101, synack.seq + 1, src_port=port)
        conn = await listener.accept(timeout=1)
        got.append((conn.remote[1], conn.core.reliable, conn.core.rto))
    assert got == [(40001, False, 0.2), (40002, True, 0.7)]


async def test_a_backlog_that_never_empties_does_not_starve_other_tasks(engine_and_peer):
    engine, peer = engine_and_peer
    engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC)  # puts EMU_IP in the filter
    stray = peer_frame(Segment(PEER_PORT, 1, 5, 0, A, 1000))
    n = 5 * FAIR_BATCHES * BATCH
    peer.link.send_batch([stray] * n)  # all queued before the pump wakes
    seen: list[int] = []

    async def watch() -> None:
        while (got := engine.statistics().frames_received) < n:
            seen.append(got)
            await trio.lowlevel.checkpoint()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
    # the watcher ran between the pump's runs of full batches, not only before and after
    between = sorted({s for s in seen if 0 < s < n})
    assert len(between) >= 2, seen
    assert all(s % (FAIR_BATCHES * BATCH) == 0 for s in between), between
    assert engine.statistics().frames_unmatched == n


async def test_listener_backlog_overflow_is_counted(engine_and_peer, caplog):
    engine, peer = engine_and_peer
    listener = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC, backlog=2)
    for port in (40001, 40002, 40003):
        peer.send(100, flags=S, src_port=port)
    answers = [await peer.expect(), await peer.expect()]
    assert sorted(a.dst_port for a in answers) == [40001, 40002]
    await trio.testing.wait_all_tasks_blocked()
    peer.expect_nothing()
    stats = listener.statistics()
    assert (stats.syns, stats.backlog_overflows, stats.waiting) == (3, 1, 2)
    assert "backlog of 2 full" in caplog.text


async def test_listener_without_auto_open_leaves_the_answer_to_the_test(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    listener = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC, auto_open=False)
    peer.send(7000, flags=S)
    conn = await listener.accept(timeout=1)
    assert conn.state is TcpState.LISTEN
    peer.expect_nothing()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        synack = await peer.expect()
        peer.send(7001, synack.seq + 1)
    assert conn.state is TcpState.ESTABLISHED
    with pytest.raises(TcpemuTimeoutError, match="no connection within 1 s"):
        await listener.accept(timeout=1)


async def test_replies_made_in_one_pump_iteration_leave_together(engine_and_peer):
    engine, peer = engine_and_peer
    engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC)
    frames = [peer_frame(Segment(port, EMU_PORT, 1, 0, S, 1000)) for port in range(41000, 41010)]
    peer.link.send_batch(frames)  # queued before the pump wakes: one iteration
    got = [await peer.expect() for _ in frames]
    assert sorted(g.dst_port for g in got) == list(range(41000, 41010))
    assert engine.statistics().tx_batches >= 1


async def test_header_prediction_takes_segments_as_the_full_path_does(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer, window=4000)
    replica = copy.deepcopy(conn.core)  # the same core, fed parsed segments through receive()
    predicted_before = engine.statistics().frames_predicted
    ts = (TcpOption(1), TcpOption(1), TcpOption.timestamps(100, 0))
    sent = [
        Segment(PEER_PORT, EMU_PORT, 7001, snd, A | P, 900, payload=b"abc", options=ts),
        Segment(PEER_PORT, EMU_PORT, 7004, snd, A, 800),  # pure ACK, window moves
        Segment(PEER_PORT, EMU_PORT, 7010, snd, A, 800, payload=b"zz"),  # out of order: full path
        Segment(PEER_PORT, EMU_PORT, 7004, snd, A | P, 700, payload=b"defghi", options=ts),  # fills the gap
        Segment(PEER_PORT, EMU_PORT, 7001, snd, A, 700, payload=b"abc"),  # retransmit: full path
        Segment(PEER_PORT, EMU_PORT, 7012, snd, A | P | TcpFlags.URG, 600, urgent=1, payload=b"u"),
        Segment(PEER_PORT, EMU_PORT, 7013, snd, F | A, 600),  # FIN: full path
    ]
    for seg in sent:
        peer.send_segment(seg)
    await conn.wait_until(lambda c: c.fin_got, timeout=1)
    got = [conn.recv_msg_nowait(ack=False) for _ in sent]
    want = [replica.receive(seg, msg.time) for seg, msg in zip(sent, got, strict=True)]
    assert got == want
    assert [m.kind for m in got] == [SegmentKind.EXPECTED] * 2 + [
        SegmentKind.OUT_OF_ORDER,
        SegmentKind.EXPECTED,
        SegmentKind.RETRANSMIT,
        SegmentKind.EXPECTED,
        SegmentKind.EXPECTED,
    ]
    core = conn.core
    for name in STATE_FIELDS:
        assert getattr(core, name) == getattr(replica, name), name
    for _ in sent:
        replica.pop_message_nowait()  # read as the connection's were
    assert core.read_stream() == replica.read_stream() == b"zzu"  # what reading a message at a time left
    # the four in order without SYN/FIN/RST took the predicted path; the other three were parsed
    assert engine.statistics().frames_predicted - predicted_before == 4


async def test_the_trace_reads_the_same_either_path_and_keeps_no_payload(autojump_clock):
    ts = (TcpOption(1), TcpOption(1), TcpOption.timestamps(100, 0))
    traces, predicted = [], []
    for fast_path in (_receive_path.predict_untrusted, lambda frame: None):  # prediction on, then off
        emu, peer_link = MemoryLink.pair()
        compiled = _engine.TAKE_PREDICTED if fast_path is _receive_path.predict_untrusted else None
        with (
            mock.patch.object(_receive_path, "predict_untrusted", fast_path),
            mock.patch.object(_engine, "TAKE_PREDICTED", compiled),
        ):
            async with tcpemu.open_engine(link=emu, seed=42) as engine:
                peer = Peer(peer_link)
                conn, snd = await open_server(engine, peer)
                for seq, flags, payload, options in (
                    (7001, A | P, b"a" * 1400, ts),
                    (8501, A, b"", ()),  # ahead: out of order
                    (7001, A, b"b" * 1400, ()),  # behind: a retransmit
                    (8401, F | A, b"", ts),
                ):
                    peer.send(seq, snd, flags, payload, options=options)
                await conn.wait_until(lambda c: c.fin_got, timeout=1)
                predicted.append(engine.statistics().frames_predicted)
                gc.collect()
                records = list(conn._trace)
                # numbers, strings and option bytes: after one pass the collector
                # never walks them again, and no payload is kept
                assert not any(gc.is_tracked(r) for r in records)
                assert all(type(x) in (int, float, str, bytes) for r in records for x in r)
                assert max(len(x) for r in records for x in r if type(x) is bytes) <= 40
                traces.append([line.split(None, 1)[1] for line in conn.trace()])  # without the time
        peer_link.close()
    assert predicted[0] > 0 and predicted[1] == 0
    assert traces[0] == traces[1]
    received = [line for line in traces[0] if line.startswith("c1 <")]
    assert received[-4:] == [
        "c1 < P. 1:1401(1400) ack 1 win 1000 <nop,nop,TS val 100 ecr 0>",
        "c1 < . 1501:1501(0) ack 1 win 1000 [out-of-order]",
        "c1 < . 1:1401(1400) ack 1 win 1000 [retransmit]",
        "c1 < F. 1401:1401(0) ack 1 win 1000 <nop,nop,TS val 100 ecr 0>",
    ]


@pytest.mark.parametrize("version", [4, 6])
async def test_the_trace_reads_options_from_the_frames_of_either_family(version):
    emu, peer_link = MemoryLink.pair()
    peer = Peer(peer_link, version)
    async with tcpemu.open_engine(link=emu, seed=42) as engine:
        conn = server(engine, version)
        peer.send(7000, flags=S, options=(TcpOption.mss(1400), TcpOption.wscale(2)))
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.wait_open)
                synack = await peer.expect()
                peer.send(7001, synack.seq + 1)
        lines = [line.split(None, 1)[1] for line in conn.trace() if " ! " not in line]
    peer_link.close()
    assert lines == [
        "c1 < S 0:0(0) win 1000 <mss 1400,wscale 2>",
        "c1 > S. 0:0(0) ack 1 win 65535 <mss 1460>",
        "c1 < . 1:1(0) ack 1 win 1000",
    ]


async def test_the_trace_logger_gets_the_lines_trace_gives(engine_and_peer, caplog):
    caplog.set_level(logging.DEBUG, logger="tcpemu.trace")
    engine, peer = engine_and_peer
    conn, snd = await open_server(engine, peer)
    peer.send(7001, snd, A | P, b"abc", options=(TcpOption(1), TcpOption(1), TcpOption.timestamps(9, 0)))
    await conn.wait_msg(timeout=1)
    await conn.send_msg(b"hello")
    await peer.expect()
    assert engine.statistics().frames_predicted == 2  # the handshake's ACK and the data
    segment_lines = [line for line in conn.trace() if " ! " not in line]
    logged = [
        r.getMessage() for r in caplog.records if r.name == "tcpemu.trace" and r.getMessage()[:1] == " "
    ]
    assert logged == segment_lines and len(segment_lines) == 5
    assert segment_lines[3].endswith("c1 < P. 1:4(3) ack 1 win 1000 <nop,nop,TS val 9 ecr 0>")


@st.composite
def peer_segments(draw: st.DrawFn) -> list[tuple[int, int, bytes, bool, int]]:
    """(seq offset from the first data byte, flags, payload, timestamps?, window) for a run of segments."""
    n = draw(st.integers(1, 12))
    out = []
    for _ in range(n):
        out.append(
            (
                draw(st.integers(-20, 60)),
                int(draw(st.sampled_from([A, A | P, A | TcpFlags.URG, F | A, A | P | TcpFlags.CWR]))),
                draw(st.binary(max_size=20)),
                draw(st.booleans()),
                draw(st.integers(0, 0xFFFF)),
            )
        )
    return out


@settings(max_examples=int(os.environ.get("TCPEMU_FUZZ_EXAMPLES", "300")), deadline=None)
@given(peer_segments(), st.sampled_from([4, 6]))
def test_header_prediction_agrees_with_the_full_path_for_any_segments(segments, version):
    """Each frame through the pump's path and, parsed, through a copy of the core: the same result."""

    def frame(seq: int, flags: int, payload: bytes = b"", ts: bool = False, window: int = 1000) -> bytes:
        options = (TcpOption(1), TcpOption(1), TcpOption.timestamps(seq, 1)) if ts else ()
        seg = Segment(PEER_PORT, EMU_PORT, seq % 2**32, 1001, FLAGS[flags], window, 0, options, payload)
        return peer_frame(seg, version)

    async def run() -> None:
        emu, peer = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu, seed=1) as engine:
            conn = server(engine, version, remote_port=PEER_PORT, isn=1000)
            engine._dispatch(frame(7000, int(S)), 0.0)
            conn.core.syn_ack(0.0)  # recorded as sent: the test is about what comes in
            engine._dispatch(frame(7001, int(A)), 0.0)
            replica = copy.deepcopy(conn.core)
            predicted_before = engine.statistics().frames_predicted
            frames = [frame(7001 + off, fl, data, ts, win) for off, fl, data, ts, win in segments]
            for i, raw in enumerate(frames):
                engine._dispatch(raw, 1.0 + i)  # the pump's own per-frame path
                replica.receive(parse_frame_untrusted(raw).segment, 1.0 + i)
            assert conn.core.statistics() == replica.statistics()
            for name in STATE_FIELDS:
                assert getattr(conn.core, name) == getattr(replica, name), name
            got = [conn.core.pop_message_nowait() for _ in frames]
            assert got == [replica.pop_message_nowait() for _ in frames]
            assert conn.core.read_stream() == replica.read_stream()
            first_offset, first_flags = segments[0][:2]
            if first_offset == 0 and not first_flags & F:  # the first one is in order: predicted
                assert engine.statistics().frames_predicted > predicted_before
        peer.close()

    trio.run(run)


# ------------------------------------------------- the path: MACs in and out


async def test_frame_to_another_mac_is_not_delivered(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, iss1 = await open_server(engine, peer)
    other = bytes.fromhex("02000000bb0b")  # a black hole: no interface, no emulator
    seg = Segment(PEER_PORT, EMU_PORT, 7001, iss1, A | P, 1000, payload=b"lost")
    peer.link.send(build_frame(Frame(PEER_MAC, other, PEER_IP, EMU_IP, seg)))
    peer.send(7001, iss1, A | P, b"kept")
    msg = await conn.recv_msg(timeout=1, ack=False)
    assert msg.payload == b"kept" and msg.kind is SegmentKind.EXPECTED
    assert conn.statistics().queued_messages == 0
    assert engine.statistics().frames_other_host == 1


async def test_syn_to_another_mac_does_not_reach_a_listener(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    lst = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC)
    syn = Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000)
    peer.link.send(build_frame(Frame(PEER_MAC, bytes.fromhex("02000000bb0b"), PEER_IP, EMU_IP, syn)))
    peer.send(7000, flags=S, src_port=PEER_PORT + 1)
    synack = await peer.expect()
    assert synack.dst_port == PEER_PORT + 1  # only the SYN to our MAC was answered
    assert lst.statistics().syns == 1 and engine.statistics().frames_other_host == 1


async def test_cut_path_drops_frames_to_that_mac_until_restored(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn, _ = await open_server(engine, peer)
    engine.cut_path(PEER_MAC.hex(":"))
    assert engine.cut_macs == {PEER_MAC}
    await conn.send_msg(b"cut")
    await trio.sleep(1)
    peer.expect_nothing()
    assert engine.statistics().frames_cut == 1
    assert any("cut" in line for line in conn.trace())
    engine.restore_path(PEER_MAC)
    await conn.send_msg(b"through")
    got = await peer.expect()
    assert got.payload == b"through"
    assert engine.cut_macs == frozenset() and engine.statistics().frames_cut == 1
    assert any("restored" in line for line in conn.trace())


async def test_engines_on_lists_open_packet_engines_only(engine_and_peer):
    engine, _ = engine_and_peer
    # an engine on a MemoryLink has no interface: it is nobody's to cut
    assert engine not in _engine.engines_on(None, "link")


async def test_engine_context_collects_engines_and_names_captures(tmp_path):
    context = _engine.EngineContext(capture_dir=tmp_path)
    token = _engine.ENGINE_CONTEXT.set(context)
    try:
        emu_link, peer_link = MemoryLink.pair()
        async with tcpemu.open_engine(link=emu_link, seed=1) as engine:
            assert context.registry == [engine]
            assert engine.capture is not None
        peer_link.close()
    finally:
        _engine.ENGINE_CONTEXT.reset(token)
    assert list(tmp_path.glob("*.pcapng"))


async def test_a_listener_offers_window_scale_sack_and_timestamps(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    lst = engine.listen(
        (str(EMU_IP), EMU_PORT), local_mac=EMU_MAC, window=1 << 20, wscale=6, sack=True, timestamps=True
    )
    peer.send(
        7000,
        flags=S,
        options=(
            TcpOption.mss(1000),
            TcpOption.sack_permitted(),
            TcpOption.timestamps(5, 0),
            TcpOption.wscale(2),
        ),
    )
    synack = await peer.expect()
    kinds = [o.kind for o in synack.options]
    assert {2, 3, 4, 8} <= set(kinds)  # MSS, window scale, SACK-permitted, timestamps
    peer.send(7001, synack.seq + 1)
    conn = await lst.accept(timeout=1)
    assert conn.core.rcv_wscale == 6 and conn.window == 1 << 20
