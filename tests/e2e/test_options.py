"""Options against the kernel: window scale, timestamps, PAWS, SACK."""

from __future__ import annotations

import pytest
import trio

import tcpemu
from tcpemu import TcpFlags, TcpOption, tcp_info
from tcpemu.lab import connect_nowait
from tcpemu.wire import OptionKind

from .conftest import EMU_PORT, connect_result, recv_exactly

pytestmark = pytest.mark.e2e


async def opened(engine, lab, **options):
    conn = engine.connection(
        tcpemu.SERVER,
        local=(str(lab.tst.ip), EMU_PORT),
        remote=(str(lab.iut.ip), None),
        local_mac=lab.alien_mac,
        remote_mac=lab.iut.mac,
        **options,
    )
    iut = await lab.iut.socket()
    connect_nowait(iut, (str(lab.tst.ip), EMU_PORT))
    # what Linux offers in its SYN, in its order (the window scale follows the lab's tcp_rmem)
    syn = await conn.expect("S 0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale *>", within=5)
    await conn.wait_open(timeout=5)
    assert await connect_result(iut) == 0
    return conn, iut, syn


async def test_window_scale_is_negotiated_both_ways(tcpemu_lab, tcpemu_engine):
    conn, iut, syn = await opened(tcpemu_engine, tcpemu_lab, wscale=6, window=1 << 20)
    kernel_shift = syn.option(OptionKind.WSCALE).value()
    info = tcp_info(iut)
    assert (info.snd_wscale, info.rcv_wscale) == (6, kernel_shift)  # the kernel agrees on both
    assert (conn.core.snd_wscale, conn.core.rcv_wscale) == (kernel_shift, 6)
    await iut.send(b"x" * 100)
    msg = await conn.expect("P. 1:101(100) ack 1", within=5)
    assert msg.window_bytes == msg.window << kernel_shift and msg.window_bytes > 0xFFFF >> 2
    assert conn.last_win_got == msg.window_bytes
    ack = await conn.send_ack()
    assert ack.window == (1 << 20) >> 6  # our 1 MiB window, scaled on the wire
    iut.close()


async def test_timestamps_echoed_by_the_kernel(tcpemu_lab, tcpemu_engine):
    conn, iut, syn = await opened(tcpemu_engine, tcpemu_lab)  # timestamps=None: as the peer does
    assert syn.timestamps is not None and conn.core.ts_enabled
    ping = await conn.send_msg(b"ping")
    assert await recv_exactly(iut, 4) == b"ping"
    await iut.send(b"pong")
    # the kernel echoes our latest TSval: in the ACK of the ping (its first data: a
    # quick ACK) and in its own data
    our_tsval = ping.option(OptionKind.TIMESTAMP).value()[0]
    assert our_tsval == conn.core.last_tsval_sent
    await conn.expect(f". 1:1(0) ack 5 <nop,nop,TS val * ecr {our_tsval}>", within=5)
    msg = await conn.expect(f"P. 1:5(4) ack 5 <nop,nop,TS val * ecr {our_tsval}>", within=5)
    assert conn.core.last_tsval_got == msg.timestamps[0]
    iut.close()


async def test_paws_drops_a_segment_with_an_old_timestamp(tcpemu_lab, tcpemu_engine):
    conn, iut, _ = await opened(tcpemu_engine, tcpemu_lab)
    await conn.send_msg(b"new")
    assert await recv_exactly(iut, 3) == b"new"
    old = (conn.core.last_tsval_sent - 100_000) % 2**32
    await conn.expect(". 1:1(0) ack 4", within=5)  # the ACK of "new" (first data: a quick ACK)
    stale = await conn.send_msg(b"OLD", options=[TcpOption(1), TcpOption(1), TcpOption.timestamps(old, 0)])
    # RFC 7323 5.3: the kernel drops it and acknowledges what it has, again
    await conn.expect(". 1:1(0) ack 4", within=5)
    await conn.send_msg(b"NEW", seq=stale.seq)  # the same bytes' place, a fresh timestamp
    assert await recv_exactly(iut, 3) == b"NEW"
    await conn.expect(". 1:1(0) ack 7", within=5)
    iut.close()


async def test_out_of_order_data_draws_sack_blocks_from_the_kernel(tcpemu_lab, tcpemu_engine):
    conn, iut, syn = await opened(tcpemu_engine, tcpemu_lab, sack=True)
    assert syn.option(OptionKind.SACK_PERMITTED) is not None and conn.core.sack_ok
    base = conn.next_seqn
    await conn.send_msg(b"B" * 100, seq=(base + 100) % 2**32)  # the first 100 bytes are missing
    # a duplicate ACK of what came in order, the block after the hole SACKed
    await conn.expect(". 1:1(0) ack 1 <nop,nop,TS val * ecr *,nop,nop,sack 101:201>", within=5)
    await conn.send_msg(b"A" * 100, seq=base)
    conn.update_sent_seq(200)
    assert await recv_exactly(iut, 200) == b"A" * 100 + b"B" * 100
    iut.close()


async def test_our_sack_blocks_describe_what_we_hold(tcpemu_lab, tcpemu_engine):
    """Data from the kernel arriving out of order (we hold back one segment) is SACKed."""
    conn, iut, _ = await opened(tcpemu_engine, tcpemu_lab, sack=True)
    conn.faults_in = tcpemu.faults.Faults(reorder=1.0, delay_range=(0.0, 0.5))
    await iut.send(b"1" * 100)
    await trio.testing.wait_all_tasks_blocked()
    conn.faults_in = None
    await iut.send(b"2" * 100)  # sent at once: TCP_NODELAY is not needed for the second
    first = await conn.expect("P. 101:201(100) ack 1", within=5)  # the second segment, first
    assert first.kind is tcpemu.SegmentKind.OUT_OF_ORDER
    ack = await conn.send_ack()
    assert ack.option(OptionKind.SACK).value() == [(first.seq, (first.seq + len(first.payload)) % 2**32)]
    assert await conn.recv_data(idle=1, timeout=5) == b"1" * 100 + b"2" * 100
    assert TcpFlags.ACK in ack.flags
    iut.close()
