"""Shared builders of the unit tests: the addresses of an in-memory link, a Peer
speaking raw frames at its far end, and connections opened through it."""

from __future__ import annotations

import ipaddress

import trio

import tcpemu
from tcpemu import SERVER, MemoryLink, TcpFlags, TcpState
from tcpemu.wire import Frame, IPAddress, Segment, TcpOption, build_frame, parse_frame_untrusted

PEER_IP, EMU_IP = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
PEER_IP6, EMU_IP6 = ipaddress.ip_address("2001:db8::1"), ipaddress.ip_address("2001:db8::2")
PEER_MAC, EMU_MAC = bytes.fromhex("02000000aa01"), bytes.fromhex("02000000aa02")
PEER_PORT, EMU_PORT = 40000, 20000
A, S, F, R, P = TcpFlags.ACK, TcpFlags.SYN, TcpFlags.FIN, TcpFlags.RST, TcpFlags.PSH
# what header prediction and the full path must leave the same
STATE_FIELDS = ("state", "rcv_nxt", "snd_una", "last_win_got", "last_tsval_got", "ts_recent", "fin_got")


def addresses(version: int = 4) -> tuple[IPAddress, IPAddress]:
    """(peer, emulator) addresses of one IP family."""
    return (PEER_IP, EMU_IP) if version == 4 else (PEER_IP6, EMU_IP6)


def peer_frame(seg: Segment, version: int = 4) -> bytes:
    """``seg`` from the peer to the emulator, as a frame."""
    return build_frame(Frame(PEER_MAC, EMU_MAC, *addresses(version), seg))


class Peer:
    """The far end of a MemoryLink, speaking raw frames."""

    def __init__(self, link: MemoryLink, version: int = 4) -> None:
        self.link = link
        self.version = version
        self.seq = 7000

    def send(
        self,
        seq: int,
        ack: int = 0,
        flags: TcpFlags = A,
        payload: bytes = b"",
        *,
        src_port: int = PEER_PORT,
        **kw,
    ) -> None:
        self.send_segment(Segment(src_port, EMU_PORT, seq, ack, flags, 1000, payload=payload, **kw))

    def send_segment(self, seg: Segment) -> None:
        self.link.send(peer_frame(seg, self.version))

    async def expect(self, timeout: float = 1.0) -> Segment:
        with trio.fail_after(timeout):
            while True:
                raw = self.link.recv_nowait()
                if raw is not None:
                    frame = parse_frame_untrusted(raw)
                    assert (frame.src_mac, frame.dst_mac) == (EMU_MAC, PEER_MAC)
                    assert (frame.dst_ip, frame.src_ip) == addresses(self.version)
                    return frame.segment
                await trio.lowlevel.wait_readable(self.link.fileno())

    def expect_nothing(self) -> None:
        assert self.link.recv_nowait() is None


def server(
    engine: tcpemu.Engine, version: int = 4, remote_port: int | None = None, **kw
) -> tcpemu.Connection:
    peer_ip, emu_ip = addresses(version)
    return engine.connection(
        SERVER,
        local=(str(emu_ip), EMU_PORT),
        remote=(str(peer_ip), remote_port),
        local_mac=EMU_MAC,
        remote_mac=PEER_MAC,
        **kw,
    )


MSS_ONLY = (TcpOption.mss(1000),)
"""The options of the peer's SYN unless a test gives others."""


async def open_server(engine, peer, *, syn_options=MSS_ONLY, **kw):
    conn = server(engine, **kw)
    peer.send(7000, flags=S, options=syn_options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.wait_open, 5)
        synack = await peer.expect()
        assert synack.flags == S | A and synack.ack == 7001
        peer.send(7001, synack.seq + 1)
    assert conn.state is TcpState.ESTABLISHED
    return conn, synack.seq + 1
