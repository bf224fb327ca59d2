"""Reliable mode (retransmission on timeout) and seeded fault injection."""

from __future__ import annotations

import ipaddress
import random

import pytest
import trio

import tcpemu
from tcpemu import SERVER, MemoryLink, TcpFlags, TcpOption, UsageError
from tcpemu.core import ConnectionCore
from tcpemu.faults import FaultAction, FaultInjector, Faults
from tcpemu.wire import Frame, Segment, build_frame, parse_frame_untrusted

A, S, F, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.FIN, TcpFlags.PSH
ISS, IRS = 1000, 5000


def seg(seq: int, ack: int, flags: TcpFlags = A, payload: bytes = b"", window: int = 60000) -> Segment:
    return Segment(40000, 20000, seq, ack, flags, window, payload=payload)


@pytest.fixture
def reliable() -> ConnectionCore:
    core = ConnectionCore(SERVER, src_port=20000, dst_port=None, isn=ISS, reliable=True, rto=0.2)
    core.receive(seg(IRS, 0, S), 0.0)
    core.syn_ack(now=0.0)
    core.receive(seg(IRS + 1, ISS + 1), 0.05)
    return core


class TestReliableCore:
    def test_unacked_data_is_retransmitted_with_backoff(self, reliable):
        reliable.send(b"abc", now=1.0)
        assert reliable.next_deadline() == pytest.approx(1.2)
        assert reliable.handle_timer(1.1) == []
        again = reliable.handle_timer(1.2)
        assert [(s.seq, s.payload) for s in again] == [(ISS + 1, b"abc")]
        assert again[0].flags & TcpFlags.ACK and again[0].ack == IRS + 1
        assert reliable.next_deadline() == pytest.approx(1.6)  # doubled
        reliable.handle_timer(1.6)
        assert reliable.next_deadline() == pytest.approx(2.4)
        assert reliable.statistics().retransmits_sent == 2
        assert reliable.next_seqn == ISS + 4  # retransmission advances nothing

    def test_ack_clears_and_resets_the_timer(self, reliable):
        reliable.send(b"abc", now=1.0)
        reliable.send(b"def", now=1.05)
        reliable.handle_timer(1.2)
        reliable.receive(seg(IRS + 1, ISS + 4), 1.3)  # first segment acked
        assert reliable.next_deadline() == pytest.approx(1.5)  # rto again, from the ack
        again = reliable.handle_timer(1.5)
        assert [s.payload for s in again] == [b"def"]
        reliable.receive(seg(IRS + 1, ISS + 7), 1.6)
        assert reliable.next_deadline() is None and reliable.unacked_bytes() == 0

    def test_explicit_seq_and_pure_acks_are_not_retransmitted(self, reliable):
        reliable.send(b"x", seq=ISS + 100, now=1.0)
        reliable.ack_now(0.0)
        assert reliable.next_deadline() is None

    def test_lost_fin_is_retransmitted(self, reliable):
        reliable.fin(now=2.0)
        again = reliable.handle_timer(2.2)
        assert again[0].flags & TcpFlags.FIN and again[0].seq == ISS + 1

    def test_every_send_needs_now(self, reliable):
        with pytest.raises(UsageError, match="now must be a number"):
            reliable.send(b"x", now=None)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="now must be a number"):
            reliable.send(b"x", now=float("nan"))

    def test_off_by_default(self):
        core = ConnectionCore(SERVER, src_port=1, dst_port=2, isn=0)
        core.receive(seg(IRS, 0, S), 0.0)
        core.syn_ack(0.0)
        core.send(b"data", now=0.0)
        assert core.next_deadline() is None and core.handle_timer(100.0) == []


class TestFaults:
    def test_probabilities_are_checked(self):
        with pytest.raises(UsageError, match=r"within 0\.\.1"):
            Faults(drop=1.5)
        with pytest.raises(UsageError, match="more than 1"):
            Faults(drop=0.6, delay=0.6)
        with pytest.raises(UsageError, match="unknown fault"):
            Faults.parse("corrupt=0.1")
        assert Faults.parse("drop=0.1, delay=0.2") == Faults(drop=0.1, delay=0.2)

    def test_decisions_follow_the_seed_and_the_rates(self):
        faults = Faults(drop=0.1, duplicate=0.1, reorder=0.1, delay=0.1, delay_range=(0.001, 0.002))
        runs = []
        for _ in range(2):
            inj = FaultInjector(random.Random(5))
            runs.append([inj.decide(faults) for _ in range(10000)])
        assert runs[0] == runs[1]
        counts = {a: sum(1 for x, _ in runs[0] if x is a) for a in FaultAction}
        for action in (FaultAction.DROP, FaultAction.DUPLICATE, FaultAction.REORDER, FaultAction.DELAY):
            assert 800 < counts[action] < 1200, counts
        assert all(0.001 <= d <= 0.002 for a, d in runs[0] if a is FaultAction.DELAY)
        assert all(d == 0.002 for a, d in runs[0] if a is FaultAction.REORDER)


PEER_IP, EMU_IP = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
PEER_MAC, EMU_MAC = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000aa02")


async def frames_from(link: MemoryLink) -> list[Segment]:
    out = []
    while (raw := link.recv_nowait()) is not None:
        out.append(parse_frame_untrusted(raw).segment)
    return out


def peer_frame(**kw) -> bytes:
    return build_frame(Frame(PEER_MAC, EMU_MAC, PEER_IP, EMU_IP, Segment(40000, 20000, **kw)))


async def open_pair(
    engine: tcpemu.Engine, peer: MemoryLink, *, window: int = 60000, options: tuple[TcpOption, ...] = ()
) -> tuple[tcpemu.Connection, int]:
    """An established SERVER connection; the peer advertises ``window`` and its SYN carries ``options``."""
    conn = engine.connection(
        SERVER,
        local=(str(EMU_IP), 20000),
        remote=(str(PEER_IP), None),
        local_mac=EMU_MAC,
        remote_mac=PEER_MAC,
    )
    peer.send(peer_frame(seq=IRS, ack=0, flags=S, window=window, options=options))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(peer.fileno())
        synack = (await frames_from(peer))[0]
        peer.send(peer_frame(seq=IRS + 1, ack=synack.seq + 1, flags=A, window=window))
    return conn, synack.seq + 1


async def test_engine_retransmits_on_timeout_until_acked(autojump_clock):
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=1, reliable=True, rto=0.2) as engine:
        conn, snd = await open_pair(engine, peer)
        await conn.send_msg(b"lost")
        await trio.sleep(0.7)  # virtual time: 0.2 + 0.4 -> two retransmissions
        sent = await frames_from(peer)
        assert [(s.seq, s.payload) for s in sent] == [(snd, b"lost")] * 3
        peer.send(peer_frame(seq=IRS + 1, ack=snd + 4, flags=A, window=60000))
        await conn.wait_until(lambda c: c.core.unacked_bytes() == 0, timeout=1)
        await trio.sleep(5)
        assert await frames_from(peer) == []
        assert conn.statistics().retransmits_sent == 2
        assert any("retransmission timeout" in line for line in conn.trace())


async def test_outgoing_faults_drop_and_duplicate(autojump_clock):
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=1) as engine:
        conn, _ = await open_pair(engine, peer)
        conn.faults_out = Faults(drop=1.0)
        await conn.send_msg(b"gone")
        conn.faults_out = Faults(duplicate=1.0)
        await conn.send_msg(b"twice")
        conn.faults_out = Faults(delay=1.0, delay_range=(0.5, 0.5))
        await conn.send_msg(b"late")
        assert [s.payload for s in await frames_from(peer)] == [b"twice", b"twice"]
        await trio.sleep(0.6)
        assert [s.payload for s in await frames_from(peer)] == [b"late"]
        faults = engine.statistics().faults
        assert (faults["out-drop"], faults["out-duplicate"], faults["out-delay"]) == (1, 1, 1)


async def test_incoming_reorder_still_reassembles(autojump_clock):
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=1) as engine:
        conn, snd = await open_pair(engine, peer)
        conn.faults_in = Faults(reorder=1.0, delay_range=(0.0, 0.1))
        peer.send(peer_frame(seq=IRS + 1, ack=snd, flags=A, window=60000, payload=b"first"))
        await trio.testing.wait_all_tasks_blocked()  # the pump has held it back
        conn.faults_in = Faults()
        peer.send(peer_frame(seq=IRS + 6, ack=snd, flags=A, window=60000, payload=b"second"))
        assert await conn.recv_data(idle=0.5) == b"firstsecond"
        assert engine.statistics().faults["in-reorder"] == 1
        assert conn.statistics().out_of_order_seen == 1


async def test_send_data_respects_the_peer_window_and_mss(autojump_clock):
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=1) as engine:
        conn, snd = await open_pair(engine, peer, window=3000, options=(TcpOption.mss(1000),))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.send_data, bytes(5000))
            await trio.testing.wait_all_tasks_blocked()
            first = await frames_from(peer)
            assert [len(s.payload) for s in first] == [1000, 1000, 1000]  # the window is full
            peer.send(peer_frame(seq=IRS + 1, ack=snd + 3000, flags=A, window=3000))
        rest = await frames_from(peer)
        assert [len(s.payload) for s in rest] == [1000, 1000]


async def test_a_retransmission_wakes_its_waiters(autojump_clock):
    """wait_until on retransmits_sent returns when the timer resends (it timed out before)."""
    from .helpers import Peer, open_server

    emu, peer_link = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=3, reliable=True, rto=0.2) as engine:
        conn, _ = await open_server(engine, Peer(peer_link))
        await conn.send_msg(b"lost")  # the peer never ACKs it
        await conn.wait_until(lambda c: c.statistics().retransmits_sent >= 1, timeout=1)
    peer_link.close()
