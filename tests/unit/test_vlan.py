"""802.1Q: a connection's frames carry its VLAN tag, and only frames with that tag are
its; the tag of a received frame is kept in the Message.  On the in-memory link (no
8021q module is needed); tests/e2e/test_vlan.py runs against the kernel where it can."""

from __future__ import annotations

import pytest
import trio

import tcpemu
from tcpemu import MemoryLink, SegmentKind, TcpFlags, UsageError, _bpf
from tcpemu.wire import Frame, Segment, add_vlan_tag, build_frame, parse_frame_untrusted, strip_vlan_tag

from .helpers import EMU_IP, EMU_MAC, EMU_PORT, PEER_IP, PEER_MAC, PEER_PORT, server

A, S, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.PSH


def tagged(seg: Segment, vlan: int | None) -> bytes:
    return add_vlan_tag(build_frame(Frame(PEER_MAC, EMU_MAC, PEER_IP, EMU_IP, seg)), vlan)


async def sent(link: MemoryLink) -> tuple[Segment, int | None]:
    with trio.fail_after(1):
        while (raw := link.recv_nowait()) is None:
            await trio.lowlevel.wait_readable(link.fileno())
    frame, vlan = strip_vlan_tag(raw)
    return parse_frame_untrusted(frame).segment, vlan


async def test_a_tagged_connection_talks_on_its_vlan_only(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn = server(engine, vlan=7)
    peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000), 8))  # another VLAN
    peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000), None))  # untagged
    peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000), 7))
    syn = await conn.wait_msg(timeout=1)
    assert syn.vlan == 7 and syn.kind is SegmentKind.EXPECTED
    assert conn.statistics().segments_received == 1
    assert engine.statistics().frames_other_host == 2
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        synack, vlan = await sent(peer.link)
        assert vlan == 7 and synack.flags == S | A
        peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7001, synack.seq + 1, A, 1000), 7))
    await conn.send_msg(b"on seven")
    data, vlan = await sent(peer.link)
    assert (data.payload, vlan) == (b"on seven", 7)
    frames = await conn.send_segments(conn.segment(b"spec"))
    assert strip_vlan_tag(frames[0])[1] == 7
    # the trace reads the segments of tagged frames at their offsets
    assert [line.split(" > ")[1] for line in conn.trace() if " > P" in line] == [
        "P. 1:9(8) ack 1 win 65535",
        "P. 9:13(4) ack 1 win 65535",
    ]


async def test_untagged_connections_take_no_tagged_frames(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    conn = server(engine)
    peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000), 3))
    peer.send(7000, flags=S)
    syn = await conn.wait_msg(timeout=1)
    assert syn.vlan is None and engine.statistics().frames_other_host == 1


async def test_a_listener_on_a_vlan(engine_and_peer, autojump_clock):
    engine, peer = engine_and_peer
    lst = engine.listen((str(EMU_IP), EMU_PORT), local_mac=EMU_MAC, vlan=12)
    peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7000, 0, S, 1000), 12))
    synack, vlan = await sent(peer.link)
    assert vlan == 12 and synack.flags == S | A
    peer.link.send(tagged(Segment(PEER_PORT, EMU_PORT, 7001, synack.seq + 1, A, 1000), 12))
    conn = await lst.accept(timeout=1)
    assert conn.vlan == 12


def test_bad_vlan_ids_are_refused():
    for bad in (-1, 4096, "7", True):
        with pytest.raises(UsageError, match="vlan"):
            add_vlan_tag(b"\0" * 60, bad)  # type: ignore[arg-type]


async def test_a_vlan_needs_the_peer_mac(engine_and_peer):
    engine, _ = engine_and_peer
    with pytest.raises(UsageError, match="VLAN"):
        engine.connection(
            tcpemu.CLIENT,
            local=(str(EMU_IP), 1),
            remote=(str(PEER_IP), 2),
            local_mac=EMU_MAC,
            remote_mac=None,
            vlan=5,
        )


def test_the_filter_takes_tagged_tcp_for_our_addresses():
    rx, tx = MemoryLink.pair()
    try:
        rx.set_filter(_bpf.tcp_to_addresses([EMU_IP]))
        ours = tagged(Segment(1, 2, 0, 0, S, 10), 9)
        others = build_frame(Frame(PEER_MAC, EMU_MAC, EMU_IP, PEER_IP, Segment(1, 2, 0, 0, S, 10)))
        for f in (ours, add_vlan_tag(others, 9), add_vlan_tag(b"\0" * 12 + b"\x08\x06" + b"\0" * 28, 9)):
            tx.send(f)
        assert rx.recv_batch(10) == [ours]
    finally:
        rx.close()
        tx.close()
