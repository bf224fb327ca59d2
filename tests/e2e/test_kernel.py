"""End to end against the Linux kernel: real lab, real AF_PACKET socket, real TCP stack."""

from __future__ import annotations

import errno
import random
import socket

import pytest
import trio

import tcpemu
import tcpemu.lab
from tcpemu import SegmentKind, TcpState, tcp_info, tcp_state, wait_tcp_state

from .conftest import (
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

pytestmark = pytest.mark.e2e


async def test_seed_scenario_server_mode(tcpemu_lab, tcpemu_engine, ipv):
    """The old C API's example: IUT connect()s, the emulator answers, 1024 bytes arrive intact."""
    lab = tcpemu_lab
    neigh = {ip: mac for ip, mac, _ in await lab.neighbours(lab.iut)}
    assert neigh[str(lab.tst.address(ipv))] == lab.alien_mac
    conn = emu_server(tcpemu_engine, lab, ipv=ipv)
    iut = await iut_connect(lab, ipv=ipv)
    await conn.wait_open(timeout=5)
    assert await connect_result(iut) == 0
    assert conn.state is TcpState.ESTABLISHED
    payload = random.Random(1).randbytes(1024)
    await conn.send_msg(payload)
    assert await recv_exactly(iut, 1024) == payload
    await conn.expect(". 1:1(0) ack 1025", within=5)  # the kernel's ACK of the data, and nothing else first
    assert conn.last_ackn_got == conn.next_seqn
    assert conn.first_seqn_got is not None and conn.next_ackn == (conn.first_seqn_got + 1) % 2**32
    assert conn.last_seqn_sent == conn.first_seqn_sent + 1
    iut.close()


async def test_client_mode_accept(tcpemu_lab, tcpemu_engine, ipv):
    lab = tcpemu_lab
    listener = await iut_listener(lab, ipv=ipv)
    conn = emu_client(tcpemu_engine, lab, ipv=ipv)
    assert conn.state is TcpState.SYN_SENT
    await conn.wait_open(timeout=5)
    with trio.fail_after(5):
        accepted, peer = await listener.accept()
    assert peer[:2] == (str(lab.tst.address(ipv)), EMU_PORT)
    await wait_tcp_state(accepted, TcpState.ESTABLISHED, timeout=5)
    # our SYN's MSS (1460), capped by the kernel at what its own MTU allows over IPv6
    assert tcp_info(accepted).snd_mss == (1460 if ipv == 4 else 1440)
    await conn.send_msg(b"hello iut")
    assert await recv_exactly(accepted, 9) == b"hello iut"
    accepted.close()
    listener.close()


async def test_client_mode_to_a_closed_port_is_refused(tcpemu_lab, tcpemu_engine, ipv):
    conn = emu_client(tcpemu_engine, tcpemu_lab, port=IUT_PORT + 7, ipv=ipv)
    with pytest.raises(tcpemu.ConnectionBrokenError, match=r"wait_open.*reset"):
        await conn.wait_open(timeout=5)
    assert conn.rst_got and conn.state is TcpState.CLOSED


async def test_data_both_ways_with_recv_data(tcpemu_lab, tcpemu_engine, ipv):
    lab = tcpemu_lab
    conn, iut = await open_emulated_server(tcpemu_engine, lab, ipv=ipv)
    rng = random.Random(2)
    to_emu = rng.randbytes(100_000)
    to_iut = rng.randbytes(20_000)

    async def send_then_fin() -> None:
        await send_all(iut, to_emu)
        iut.shutdown(socket.SHUT_WR)  # the FIN ends recv_data: no idle period to guess

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_then_fin)
        got = await conn.recv_data(idle=5, timeout=20)
    assert got == to_emu and conn.fin_got
    # the kernel's in-order data segments (with timestamps) took header prediction
    assert tcpemu_engine.statistics().frames_predicted >= len(to_emu) // conn.core.mss // 2
    for i in range(0, len(to_iut), 1000):
        await conn.send_msg(to_iut[i : i + 1000])
    assert await recv_exactly(iut, len(to_iut)) == to_iut
    assert conn.statistics().queue_overflows == 0
    iut.close()


async def test_withheld_acks_make_the_kernel_retransmit(tcpemu_lab, tcpemu_engine, ipv):
    """recv_msg() returns retransmits; recv_msg(skip_retransmits=True) passes over them."""
    lab = tcpemu_lab
    conn, iut = await open_emulated_server(tcpemu_engine, lab, ipv=ipv)
    await iut.send(b"A" * 100)
    # the same segment twice: the first transmission, then (unacknowledged) its
    # retransmission, a tail-loss probe or the RTO's, well within 5 s
    first = await conn.expect("P. 1:101(100) ack 1", within=5)
    again = await conn.expect("P. 1:101(100) ack 1", within=5)
    assert first.kind is SegmentKind.EXPECTED and first.payload == b"A" * 100
    assert again.kind is SegmentKind.RETRANSMIT and again.payload == first.payload
    assert tcp_info(iut).total_retrans >= 1
    await conn.ack_all()

    await iut.send(b"B" * 100)
    await conn.wait_until(lambda c: c.statistics().retransmits_seen >= 2, timeout=5, what="a retransmit of B")
    await conn.ack_all()
    await iut.send(b"C" * 100)
    b = await conn.recv_msg(timeout=5, skip_retransmits=True)
    c = await conn.recv_msg(timeout=5, skip_retransmits=True)
    assert (b.payload, b.kind) == (b"B" * 100, SegmentKind.EXPECTED)
    assert (c.payload, c.kind) == (b"C" * 100, SegmentKind.EXPECTED)
    assert c.seq == (b.seq + 100) % 2**32
    iut.close()


async def test_fin_from_the_peer_then_send_fin(tcpemu_lab, tcpemu_engine, ipv):
    lab = tcpemu_lab
    conn, iut = await open_emulated_server(tcpemu_engine, lab, ipv=ipv)
    await iut.send(b"bye")
    iut.shutdown(socket.SHUT_WR)
    data = await conn.recv_data(idle=1, timeout=5)
    assert data == b"bye" and conn.fin_got
    assert conn.next_ackn == (conn.first_seqn_got + 1 + 3 + 1) % 2**32  # FIN counted
    assert conn.state is TcpState.CLOSE_WAIT
    await wait_tcp_state(iut, TcpState.FIN_WAIT_2, timeout=5)
    await conn.send_fin(timeout=5)
    assert conn.state is TcpState.CLOSED
    # Linux hands a connection entering TIME-WAIT to a timewait socket; the
    # user's socket then reads CLOSED in TCP_INFO.
    await wait_tcp_state(iut, TcpState.CLOSED, timeout=5)
    assert await iut.recv(10) == b""
    iut.close()


async def test_send_fin_waits_for_the_ack_and_iut_sees_eof(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    await conn.send_fin(timeout=5)
    assert conn.state is TcpState.FIN_WAIT_2
    assert await iut.recv(10) == b""
    assert tcp_state(iut) is TcpState.CLOSE_WAIT
    iut.close()
    await conn.expect(". 1:1(0) ack 2", within=5)  # the queue keeps the ACK of our FIN first
    assert conn.next_seqn == (conn.first_seqn_sent + 2) % 2**32  # our SYN and FIN
    await conn.expect("F. 1:1(0) ack 2", within=5, ack=True)
    assert conn.fin_got and conn.state is TcpState.TIME_WAIT


async def test_send_rst_resets_the_iut_socket(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    await conn.send_rst()
    with trio.fail_after(5), pytest.raises(ConnectionResetError) as info:
        await iut.recv(10)
    assert info.value.errno == errno.ECONNRESET
    assert conn.state is TcpState.CLOSED
    iut.close()


async def test_delayed_syn_ack_holds_the_iut_in_syn_sent(tcpemu_lab, tcpemu_engine, ipv):
    lab = tcpemu_lab
    conn = emu_server(tcpemu_engine, lab, ipv=ipv)
    iut = await iut_connect(lab, ipv=ipv)
    mss = 1460 if ipv == 4 else 1440  # MTU 1500 less the IP and TCP headers
    # the options in Linux's order; the lab pins tcp_rmem, so the window scale is 7
    syn_line = f"S 0:0(0) <mss {mss},sackOK,TS val * ecr 0,nop,wscale 7>"
    await conn.expect(syn_line, within=5)
    assert tcp_state(iut) is TcpState.SYN_SENT
    # the kernel retransmits its SYN (1 s later) and is still waiting for us
    again = await conn.expect(syn_line, within=5)
    assert again.retransmit and conn.statistics().retransmits_seen >= 1
    info = tcp_info(iut)
    assert info.state is TcpState.SYN_SENT and info.total_retrans >= 1
    await conn.wait_open(timeout=5)
    assert await connect_result(iut) == 0
    assert tcp_state(iut) is TcpState.ESTABLISHED
    iut.close()


async def test_destroy_sends_nothing(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    sent = tcpemu_engine.statistics().frames_sent
    await conn.aclose()
    assert tcpemu_engine.statistics().frames_sent == sent
    assert tcp_state(iut) is TcpState.ESTABLISHED
    iut.close()


async def test_listener_accepts_many_kernel_connections(tcpemu_lab, tcpemu_engine, ipv):
    lab = tcpemu_lab
    listener = tcpemu_engine.listen((str(lab.tst.address(ipv)), EMU_PORT), local_mac=lab.alien_mac)
    socks = []
    for _ in range(50):
        sock = await lab.iut.socket(family(ipv))
        assert tcpemu.lab.connect_nowait(sock, (str(lab.tst.address(ipv)), EMU_PORT)) == errno.EINPROGRESS
        socks.append(sock)
    for sock in socks:
        assert await connect_result(sock) == 0
    conns = [await listener.accept(timeout=5) for _ in socks]
    assert len({c.remote for c in conns}) == 50
    assert all(c.state is TcpState.ESTABLISHED for c in conns)
    by_port = {c.remote[1]: c for c in conns}
    sock = socks[17]
    await sock.send(b"which one")
    conn = by_port[sock.getsockname()[1]]
    assert (await conn.expect("P. 1:10(9) ack 1", within=5)).payload == b"which one"
    assert listener.statistics().backlog_overflows == 0
    for s in socks:
        s.close()
