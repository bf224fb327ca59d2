"""The classic-BPF filter, run by the kernel on a unix datagram socket (no privileges)."""

from __future__ import annotations

import ipaddress

import pytest

from tcpemu import MemoryLink, UsageError, _bpf
from tcpemu.wire import Frame, Segment, TcpFlags, build_frame

MAC = bytes.fromhex("020000000001")


def tcp_frame(dst: str, src: str | None = None, tag: int = 0) -> bytes:
    d = ipaddress.ip_address(dst)
    s = ipaddress.ip_address(src or ("198.18.0.1" if d.version == 4 else "2001:db8::1"))
    return build_frame(Frame(MAC, MAC, s, d, Segment(1000 + tag, 2000, tag, 0, TcpFlags.SYN, 100)))


def udp_frame(dst: str) -> bytes:
    raw = bytearray(tcp_frame(dst))
    raw[23] = 17  # protocol UDP (checksums do not matter to the filter)
    return bytes(raw)


ARP = MAC + MAC + b"\x08\x06" + b"\x00" * 28


def run(addresses: list[str], frames: list[bytes]) -> list[bytes]:
    rx, tx = MemoryLink.pair()
    try:
        rx.set_filter(_bpf.tcp_to_addresses([ipaddress.ip_address(a) for a in addresses]))
        for f in frames:
            tx.send(f)
        return rx.recv_batch(100)
    finally:
        rx.close()
        tx.close()


def test_only_tcp_to_our_addresses_passes():
    ours4, ours6 = tcp_frame("198.18.0.2", tag=1), tcp_frame("2001:db8::2", tag=2)
    frames = [
        tcp_frame("198.18.0.3"),
        ours4,
        udp_frame("198.18.0.2"),
        ARP,
        tcp_frame("2001:db8::3"),
        tcp_frame("2001:db8::1:2"),  # differs only in a middle word
        ours6,
        tcp_frame("198.18.0.4"),
    ]
    assert run(["198.18.0.2", "198.18.0.9", "2001:db8::2"], frames) == [ours4, ours6]


def test_no_addresses_passes_nothing():
    assert run([], [tcp_frame("198.18.0.2"), tcp_frame("2001:db8::2")]) == []


def test_reject_all():
    rx, tx = MemoryLink.pair()
    rx.set_filter(_bpf.reject_all())
    tx.send(tcp_frame("198.18.0.2"))
    assert rx.recv_batch(10) == []
    rx.close()
    tx.close()


def test_too_many_addresses_is_a_clear_error():
    many = [ipaddress.ip_address(f"2001:db8::{i:x}") for i in range(1, 40)]
    with pytest.raises(UsageError, match="too many local addresses"):
        _bpf.tcp_to_addresses(many)
