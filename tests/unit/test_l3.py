"""An engine on a link without an Ethernet header (TUN, IP tunnels): IP packets in and
out, no MACs, no ARP; the BPF filter and the capture follow.  In-memory, no network."""

from __future__ import annotations

import pytest
import trio

import tcpemu
from tcpemu import L3_MAC, SERVER, MemoryLink, TcpFlags, TcpState, UsageError, _bpf
from tcpemu.capture import LINKTYPE_RAW, PcapngWriter, read_pcapng
from tcpemu.wire import Frame, Segment, build_frame, parse_frame_untrusted

from .helpers import EMU_IP, EMU_IP6, EMU_PORT, PEER_IP, PEER_IP6, PEER_PORT

A, S, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.PSH


def packet(seg: Segment, version: int = 4) -> bytes:
    """``seg`` from the peer as a bare IP packet."""
    src, dst = (PEER_IP, EMU_IP) if version == 4 else (PEER_IP6, EMU_IP6)
    return build_frame(Frame(b"\0" * 6, b"\0" * 6, src, dst, seg))[14:]


async def answer(link: MemoryLink) -> Segment:
    with trio.fail_after(1):
        while (raw := link.recv_nowait()) is None:
            await trio.lowlevel.wait_readable(link.fileno())
    assert raw[0] >> 4 in (4, 6), "an IP packet, no Ethernet header in front"
    return parse_frame_untrusted(
        b"\0" * 12 + (b"\x08\x00" if raw[0] >> 4 == 4 else b"\x86\xdd") + raw
    ).segment


@pytest.mark.parametrize("version", [4, 6])
async def test_handshake_and_data_over_bare_ip_packets(version, autojump_clock, tmp_path):
    emu, peer = MemoryLink.pair(l3=True)
    capture = PcapngWriter(tmp_path / "l3.pcapng", linktype=LINKTYPE_RAW)
    async with tcpemu.open_engine(link=emu, seed=1, capture=capture) as engine:
        local, remote = (EMU_IP, PEER_IP) if version == 4 else (EMU_IP6, PEER_IP6)
        conn = engine.connection(SERVER, local=(str(local), EMU_PORT), remote=(str(remote), None))
        assert (conn.local_mac, conn.remote_mac) == (L3_MAC, L3_MAC)
        peer.send(packet(Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000), version))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.wait_open, 5)
            synack = await answer(peer)
            assert synack.flags == S | A and synack.ack == 7001
            peer.send(packet(Segment(PEER_PORT, EMU_PORT, 7001, synack.seq + 1, A, 1000), version))
        assert conn.state is TcpState.ESTABLISHED
        peer.send(
            packet(Segment(PEER_PORT, EMU_PORT, 7001, synack.seq + 1, A | P, 1000, payload=b"hi"), version)
        )
        assert (await conn.recv_msg(timeout=1, ack=False)).payload == b"hi"
        await conn.send_msg(b"back")
        assert (await answer(peer)).payload == b"back"
        assert engine.statistics().malformed == {}
    records = list(read_pcapng(tmp_path / "l3.pcapng"))
    assert len(records) == 5 and all(r.frame[0] >> 4 == version for r in records)  # raw IP, linktype 101
    data = (tmp_path / "l3.pcapng").read_bytes()
    idb = int.from_bytes(data[4:8], "little")  # the interface block follows the section header
    assert data[idb + 8 : idb + 10] == LINKTYPE_RAW.to_bytes(2, "little")


async def test_no_macs_on_a_link_without_ethernet(autojump_clock, tmp_path):
    emu, _peer = MemoryLink.pair(l3=True)
    async with tcpemu.open_engine(link=emu, seed=1) as engine:
        with pytest.raises(UsageError, match="no Ethernet header"):
            engine.connection(
                SERVER, local=(str(EMU_IP), EMU_PORT), remote=(str(PEER_IP), None), local_mac=L3_MAC
            )
        with pytest.raises(UsageError, match="link type"):
            async with tcpemu.open_engine(
                link=MemoryLink.pair(l3=True)[0], capture=PcapngWriter("/dev/null")
            ):
                pass


def test_the_l3_filter_takes_tcp_to_our_addresses_only():
    rx, tx = MemoryLink.pair(l3=True)
    try:
        rx.set_filter(_bpf.tcp_to_addresses([EMU_IP, EMU_IP6], l3=True))
        ours4 = packet(Segment(1, 2, 0, 0, S, 10))
        ours6 = packet(Segment(1, 2, 0, 0, S, 10), 6)
        other = build_frame(Frame(b"\0" * 6, b"\0" * 6, EMU_IP, PEER_IP, Segment(1, 2, 0, 0, S, 10)))[14:]
        udp = bytearray(ours4)
        udp[9] = 17
        for p in (ours4, other, bytes(udp), ours6, b"\x00" * 40):
            tx.send(p)
        assert rx.recv_batch(10) == [ours4, ours6]
    finally:
        rx.close()
        tx.close()
