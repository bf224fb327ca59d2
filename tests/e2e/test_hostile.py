"""What arrives on the wire that is not ours, or is hostile: the engine keeps
serving its own connections, answers nothing it should not, and counts."""

from __future__ import annotations

import ipaddress
import random
import socket

import pytest
import trio

from tcpemu import TcpFlags, TcpState, net
from tcpemu.wire import Frame, Segment, build_frame, parse_mac

from .conftest import EMU_PORT, open_emulated_server, recv_exactly, send_all

pytestmark = pytest.mark.e2e


def iut_frames(lab, segments: list[Segment]) -> list[bytes]:
    src, dst = parse_mac(lab.iut.mac), parse_mac(lab.alien_mac)
    return [build_frame(Frame(src, dst, lab.iut.ip, lab.tst.ip, s)) for s in segments]


async def test_foreign_tcp_on_the_same_link_never_reaches_the_pump(tcpemu_lab, tcpemu_engine):
    lab = tcpemu_lab
    other = ipaddress.ip_address("198.18.0.3")
    await trio.to_thread.run_sync(net.add_address, lab.tst.netns, lab.tst.ifname, other, 24)
    conn, iut = await open_emulated_server(tcpemu_engine, lab)
    received = tcpemu_engine.statistics().frames_received
    # kernel to kernel on the same veth, beside the emulated connection
    srv = await lab.tst.socket()
    await srv.bind((str(other), 30001))
    srv.listen(1)
    cli = await lab.iut.socket()
    with trio.fail_after(5):
        await cli.connect((str(other), 30001))
        peer, _ = await srv.accept()
    payload = random.Random(1).randbytes(200_000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_all, cli, payload)
        assert await recv_exactly(peer, len(payload), timeout=10) == payload
    await conn.send_msg(b"still ours")
    assert await recv_exactly(iut, 10) == b"still ours"
    await conn.expect(". 1:1(0) ack 11", within=5)
    stats = tcpemu_engine.statistics()
    # only the emulated connection's own ACK came through the filter
    assert stats.frames_received - received == 1
    assert stats.frames_unmatched == 0 and not stats.malformed
    for s in (cli, peer, srv, iut):
        s.close()


async def test_rst_storm_outside_the_window_is_counted_and_ignored(tcpemu_lab, tcpemu_engine):
    lab = tcpemu_lab
    conn, iut = await open_emulated_server(tcpemu_engine, lab)
    sent_before = tcpemu_engine.statistics().frames_sent
    rng = random.Random(2)
    far = [(conn.next_ackn + (1 << 31) + rng.randrange(1 << 20)) % (1 << 32) for _ in range(5000)]
    iut_port = iut.getsockname()[1]
    storm = [Segment(iut_port, EMU_PORT, seq, 0, TcpFlags.RST, 0) for seq in far]
    await lab.iut.send_frames(iut_frames(lab, storm))
    await conn.wait_until(lambda c: c.statistics().rst_ignored >= 5000, timeout=10)
    assert not conn.rst_got and conn.state is TcpState.ESTABLISHED
    assert tcpemu_engine.statistics().frames_sent == sent_before  # nothing answered
    await iut.send(b"after the storm")
    msgs = []
    with trio.fail_after(5):
        while not msgs or msgs[-1].payload != b"after the storm":
            msgs.append(await conn.recv_msg(timeout=5))
    assert tcpemu_engine.statistics().kernel_drops == 0
    iut.close()


async def test_syn_flood_at_a_server_connection(tcpemu_lab, tcpemu_engine):
    lab = tcpemu_lab
    conn, iut = await open_emulated_server(tcpemu_engine, lab)
    sent_before = tcpemu_engine.statistics().frames_sent
    unmatched_before = tcpemu_engine.statistics().frames_unmatched
    # SYNs from 5,000 other ports (the IUT's own ephemeral port may fall in the
    # range: that one would belong to the established connection)
    iut_port = iut.getsockname()[1]
    ports = [p for p in range(40000, 45001) if p != iut_port][:5000]
    flood = [Segment(port, EMU_PORT, port * 7, 0, TcpFlags.SYN, 1000) for port in ports]
    await lab.iut.send_frames(iut_frames(lab, flood))
    # a segment of the real connection, sent after the flood on the same
    # link, arrives after it: once it is here the flood has been counted
    await iut.send(b"marker")
    assert (await conn.expect("P. 1:7(6) ack 1", within=10)).payload == b"marker"
    assert tcpemu_engine.statistics().frames_unmatched - unmatched_before == len(flood)
    assert tcpemu_engine.statistics().frames_sent == sent_before  # no SYN-ACK to anybody
    await conn.send_msg(b"served")
    assert await recv_exactly(iut, 6) == b"served"
    assert conn.state is TcpState.ESTABLISHED
    iut.close()


async def test_frames_for_addresses_not_ours_are_filtered(tcpemu_lab, tcpemu_engine):
    lab = tcpemu_lab
    conn, iut = await open_emulated_server(tcpemu_engine, lab)
    received = tcpemu_engine.statistics().frames_received
    src, dst = parse_mac(lab.iut.mac), parse_mac(lab.alien_mac)
    strangers = [
        build_frame(
            Frame(
                src,
                dst,
                lab.iut.ip,
                ipaddress.ip_address(f"198.18.0.{n}"),
                Segment(1, 2, 0, 0, TcpFlags.SYN, 1),
            )
        )
        for n in range(10, 200)
    ]
    await lab.iut.send_frames(strangers)
    await conn.send_msg(b"x")
    await conn.expect(". 1:1(0) ack 2", within=5)
    assert tcpemu_engine.statistics().frames_received - received == 1  # only our ACK
    iut.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    iut.close()
