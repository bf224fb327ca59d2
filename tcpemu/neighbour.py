"""ARP and IPv6 neighbour discovery frames: built and parsed, no I/O.

The engine uses them to answer for its emulated addresses (so an IUT that
cannot be given a static neighbour entry still reaches the emulator) and to
find a peer's MAC itself.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from ._errors import MalformedFrameError
from .wire import IPAddress, ones_sum

__all__ = [
    "NeighbourMessage",
    "parse_neighbour_untrusted",
    "arp_request",
    "arp_reply",
    "neighbour_solicitation",
    "neighbour_advertisement",
    "solicited_node",
]

ETH_P_ARP = 0x0806
ARP_REQUEST, ARP_REPLY = 1, 2
NS, NA = 135, 136
BROADCAST = b"\xff" * 6


@dataclass(frozen=True, slots=True)
class NeighbourMessage:
    """A question (``request``) or an answer about ``target``'s MAC."""

    request: bool
    target: IPAddress
    sender_ip: IPAddress
    sender_mac: bytes
    """The MAC of whoever sent it (for an answer: the target's MAC)."""


def solicited_node(addr: ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\xff\x02" + b"\x00" * 9 + b"\x01\xff" + addr.packed[13:])


def _multicast_mac(addr: ipaddress.IPv6Address) -> bytes:
    return b"\x33\x33" + addr.packed[12:]


def _arp(
    op: int, src_mac: bytes, src_ip: IPAddress, dst_mac: bytes, target_mac: bytes, target_ip: IPAddress
) -> bytes:
    return (
        dst_mac
        + src_mac
        + struct.pack("!HHHBBH", ETH_P_ARP, 1, 0x0800, 6, 4, op)
        + src_mac
        + src_ip.packed
        + target_mac
        + target_ip.packed
    )


def arp_request(src_mac: bytes, src_ip: IPAddress, target_ip: IPAddress) -> bytes:
    return _arp(ARP_REQUEST, src_mac, src_ip, BROADCAST, b"\x00" * 6, target_ip)


def arp_reply(our_mac: bytes, our_ip: IPAddress, asker_mac: bytes, asker_ip: IPAddress) -> bytes:
    return _arp(ARP_REPLY, our_mac, our_ip, asker_mac, asker_mac, asker_ip)


def _icmp6(src_mac: bytes, dst_mac: bytes, src: IPAddress, dst: IPAddress, body: bytes) -> bytes:
    pseudo = src.packed + dst.packed + struct.pack("!IxxxB", len(body), 58)
    checksum = ~ones_sum(pseudo + body) & 0xFFFF
    body = body[:2] + struct.pack("!H", checksum) + body[4:]
    ip6 = struct.pack("!IHBB", 0x60000000, len(body), 58, 255) + src.packed + dst.packed
    return dst_mac + src_mac + b"\x86\xdd" + ip6 + body


def neighbour_solicitation(src_mac: bytes, src_ip: IPAddress, target: ipaddress.IPv6Address) -> bytes:
    group = solicited_node(target)
    body = struct.pack("!BBHI", NS, 0, 0, 0) + target.packed + struct.pack("!BB", 1, 1) + src_mac
    return _icmp6(src_mac, _multicast_mac(group), src_ip, group, body)


def neighbour_advertisement(
    our_mac: bytes, target: ipaddress.IPv6Address, asker_mac: bytes, asker_ip: ipaddress.IPv6Address
) -> bytes:
    solicited = not asker_ip.is_unspecified
    dst = asker_ip if solicited else ipaddress.IPv6Address("ff02::1")
    flags = (0x40000000 if solicited else 0) | 0x20000000  # S, O
    body = struct.pack("!BBHI", NA, 0, 0, flags) + target.packed + struct.pack("!BB", 2, 1) + our_mac
    return _icmp6(our_mac, asker_mac if solicited else b"\x33\x33\x00\x00\x00\x01", target, dst, body)


def parse_neighbour_untrusted(frame: bytes) -> NeighbourMessage | None:
    """An ARP request/reply or an IPv6 NS/NA; None for any other frame."""
    if len(frame) < 14:
        raise MalformedFrameError("truncated", f"{len(frame)} bytes")
    ethertype = frame[12:14]
    if ethertype == b"\x08\x06":
        if len(frame) < 42:
            raise MalformedFrameError("arp", f"{len(frame)} bytes, an ARP frame needs 42")
        htype, ptype, hlen, plen, op = struct.unpack_from("!HHBBH", frame, 14)
        if (htype, ptype, hlen, plen) != (1, 0x0800, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
            raise MalformedFrameError("arp", f"ARP for hardware {htype}, protocol {ptype:#x}, op {op}")
        request = op == ARP_REQUEST
        return NeighbourMessage(
            request=request,
            # a request asks about its target address, a reply tells about its sender's
            target=ipaddress.IPv4Address(frame[38:42] if request else frame[28:32]),
            sender_ip=ipaddress.IPv4Address(frame[28:32]),
            sender_mac=frame[22:28],
        )
    if ethertype == b"\x86\xdd" and len(frame) > 20 and frame[20] == 58:
        if len(frame) < 78:
            raise MalformedFrameError("ndp", f"{len(frame)} bytes, too short for NS/NA")
        kind = frame[54]
        if kind not in (NS, NA):
            return None
        target = ipaddress.IPv6Address(frame[62:78])
        mac = frame[6:12]
        off = 78  # options: source (NS) or target (NA) link-layer address
        while off + 8 <= len(frame):
            otype, olen = frame[off], frame[off + 1]
            if olen == 0:
                raise MalformedFrameError("ndp", "an NDP option of length 0")
            if otype in (1, 2):
                mac = frame[off + 2 : off + 8]
            off += olen * 8
        return NeighbourMessage(
            request=kind == NS,
            target=target,
            sender_ip=ipaddress.IPv6Address(frame[22:38]),
            sender_mac=mac,
        )
    return None
