"""Every field of a segment in the test's hands, against the kernel: bad
checksums, duplicates, reordering, urgent data, IP options, bad offsets."""

from __future__ import annotations

import socket
import struct

import pytest
import trio

from tcpemu import TcpFlags, UsageError, malform
from tcpemu._netns import run_in_netns

from .conftest import open_emulated_server, recv_exactly

pytestmark = pytest.mark.e2e


def tcp_snmp(netns: str) -> dict[str, int]:
    """The Tcp: counters of /proc/net/snmp inside a namespace."""

    def read() -> dict[str, int]:
        # /proc/net follows the process; /proc/thread-self/net this thread (in the namespace)
        with open("/proc/thread-self/net/snmp") as f:
            rows = [line.split() for line in f if line.startswith("Tcp:")]
        return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:], strict=True)}

    return run_in_netns(netns, read)


async def test_bad_tcp_checksum_is_dropped_and_the_retransmission_delivered(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    before = tcp_snmp(tcpemu_lab.iut.netns)
    spec = conn.segment(b"bad")
    right = struct.unpack_from("!H", spec.encode(), len(spec.encode()) - 3 - 20 + 16)[0]
    spec.checksum = right ^ 0xFFFF
    await conn.send_segments(spec)
    spec.checksum = None  # the same segment again, correct this time
    await conn.send_segments(spec)
    conn.update_sent_seq(3)
    await conn.expect(". 1:1(0) ack 4", within=5)  # acked for the good one...
    assert await recv_exactly(iut, 3) == b"bad"
    # ...and once: had the kernel taken the bad one, the good one would be a
    # duplicate and draw a duplicate ACK at once
    await conn.expect_nothing(for_=0.2)
    assert tcp_snmp(tcpemu_lab.iut.netns)["InCsumErrors"] - before["InCsumErrors"] == 1
    iut.close()


async def test_duplicates_are_delivered_once(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    spec = conn.segment(b"once")
    await conn.send_segments([spec, spec, spec])
    conn.update_sent_seq(4)
    await conn.send_msg(b"|end")
    assert await recv_exactly(iut, 8) == b"once|end"
    iut.close()


async def test_stream_cut_and_sent_out_of_order_arrives_in_order(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    data = b"abcdefghijklmnop"
    a, b, c, d = conn.stream_segments(data, cuts=[3, 7, 12])
    await conn.send_segments([d, b, a, c, b])  # shuffled, one duplicate
    conn.update_sent_seq(len(data))
    assert await recv_exactly(iut, len(data)) == data
    with pytest.raises(UsageError, match="cuts must lie within"):
        conn.stream_segments(data, cuts=[99])
    iut.close()


async def test_urgent_data_reaches_the_iut_out_of_band(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    spec = conn.segment(b"abc!", flags=TcpFlags.ACK | TcpFlags.PSH | TcpFlags.URG, urgent=4)
    await conn.send_segments(spec)
    conn.update_sent_seq(4)
    with trio.fail_after(5):
        await trio.lowlevel.wait_readable(iut)
    assert await iut.recv(1, socket.MSG_OOB) == b"!"  # Linux: the byte before the urgent pointer
    assert await recv_exactly(iut, 3) == b"abc"
    iut.close()


async def test_ip_options_and_header_fields(tcpemu_lab, tcpemu_engine):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab)
    spec = conn.segment(b"opts", ip_options=b"\x01\x01\x01\x00", ttl=7, tos=0x02, ip_id=4242, df=False)
    frame = spec.encode()
    assert frame[14] == 0x46 and frame[22] == 7 and frame[15] == 0x02  # IHL 6 words, TTL, ECN bits
    await conn.send_segments(spec)
    conn.update_sent_seq(4)
    assert await recv_exactly(iut, 4) == b"opts"
    iut.close()


async def test_data_offset_too_small_is_dropped(tcpemu_lab, tcpemu_engine):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab)
    before = tcp_snmp(tcpemu_lab.iut.netns)
    bad = conn.segment(b"xxxx", data_offset=4)  # 16 bytes: less than a TCP header
    await conn.send_segments(bad)
    await conn.send_msg(b"good")
    assert await recv_exactly(iut, 4) == b"good"
    assert tcp_snmp(tcpemu_lab.iut.netns)["InErrs"] - before["InErrs"] == 1
    with pytest.raises(UsageError, match="no field"):
        conn.segment(b"", nonsense=1)
    iut.close()


async def test_one_segment_as_out_of_order_ip_fragments_is_reassembled(tcpemu_lab, tcpemu_engine, ipv):
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    data = bytes(range(200))
    spec = conn.segment(data, df=False, ip_id=777)
    frame = spec.encode()
    cut = malform.fragment_ipv4 if ipv == 4 else malform.fragment_ipv6
    pieces = cut(frame, [(80, 220), (0, 40), (40, 80)])  # last fragment first
    await conn.send_frames(pieces)
    conn.update_sent_seq(len(data))
    assert await recv_exactly(iut, len(data)) == data
    iut.close()


async def test_overlapping_ip_fragments_drop_the_whole_datagram(tcpemu_lab, tcpemu_engine, ipv):
    """Linux discards a datagram whose fragments overlap (RFC 5722 for IPv6; the
    same rule for IPv4 since the FragmentSmack fixes): nothing is delivered."""
    conn, iut = await open_emulated_server(tcpemu_engine, tcpemu_lab, ipv=ipv)
    frame = conn.segment(b"B" * 100, df=False, ip_id=778).encode()
    cut = malform.fragment_ipv4 if ipv == 4 else malform.fragment_ipv6
    await conn.send_frames(cut(frame, [(0, 64), (56, 120)]))  # 8 bytes overlap
    # other bytes at the same place, as one whole segment: had the fragments
    # been reassembled, the B's would have arrived and these been duplicates
    await conn.send_msg(b"A" * 100)
    assert await recv_exactly(iut, 100) == b"A" * 100
    await conn.send_msg(b"|")
    assert await recv_exactly(iut, 1) == b"|"
    iut.close()
