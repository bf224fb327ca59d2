"""Deliberate malformation, applied to encoded frames (never a flag in the core).

Each function takes the bytes of an Ethernet/IP/TCP frame built by tcpemu
and returns new bytes with one thing wrong on purpose.  Offsets are found
from the frame itself, so IPv4 (with or without IP options) and IPv6 work.
"""

from __future__ import annotations

import struct

from ._errors import UsageError
from .wire import ETH_HLEN, classify_untrusted, internet_checksum

__all__ = [
    "set_tcp_checksum",
    "corrupt_tcp_checksum",
    "corrupt_ip_checksum",
    "set_data_offset",
    "set_ip_total_length",
    "truncate",
    "fragment_ipv4",
    "fragment_ipv6",
]


def _tcp_start(frame: bytes) -> int:
    return classify_untrusted(frame)[2]


def set_tcp_checksum(frame: bytes, value: int) -> bytes:
    """The TCP checksum field set to ``value``."""
    b = bytearray(frame)
    struct.pack_into("!H", b, _tcp_start(frame) + 16, value & 0xFFFF)
    return bytes(b)


def corrupt_tcp_checksum(frame: bytes) -> bytes:
    """A TCP checksum that is wrong (the right one with its bits flipped)."""
    start = _tcp_start(frame)
    (right,) = struct.unpack_from("!H", frame, start + 16)
    return set_tcp_checksum(frame, right ^ 0xFFFF or 0x1234)


def corrupt_ip_checksum(frame: bytes) -> bytes:
    """An IPv4 header checksum that is wrong."""
    if frame[12:14] != b"\x08\x00":
        raise UsageError("corrupt_ip_checksum: IPv6 has no header checksum")
    b = bytearray(frame)
    (right,) = struct.unpack_from("!H", b, ETH_HLEN + 10)
    struct.pack_into("!H", b, ETH_HLEN + 10, right ^ 0xFFFF or 0x1234)
    return bytes(b)


def set_data_offset(frame: bytes, words: int) -> bytes:
    """The TCP data offset field set to ``words`` (0..15), whatever the header really holds."""
    if not 0 <= words <= 15:
        raise UsageError(f"a data offset is 0..15 words, got {words}")
    b = bytearray(frame)
    start = _tcp_start(frame)
    b[start + 12] = (words << 4) | (b[start + 12] & 0x0F)
    return bytes(b)


def set_ip_total_length(frame: bytes, length: int) -> bytes:
    """The IPv4 total length (or IPv6 payload length) set to ``length``, the frame unchanged."""
    b = bytearray(frame)
    offset = ETH_HLEN + 2 if frame[12:14] == b"\x08\x00" else ETH_HLEN + 4
    struct.pack_into("!H", b, offset, length & 0xFFFF)
    return bytes(b)


def truncate(frame: bytes, length: int) -> bytes:
    """The first ``length`` bytes of the frame (headers cut short if it is small)."""
    if length < 0:
        raise UsageError(f"truncate to {length} bytes?")
    return frame[:length]


def _check_fragment_range(start: int, end: int, size: int) -> None:
    if start % 8 or not 0 <= start < end <= size:
        raise UsageError(f"fragment range {start}..{end}: start a multiple of 8, within 0..{size}")


def fragment_ipv4(frame: bytes, ranges: list[tuple[int, int]], *, ip_id: int | None = None) -> list[bytes]:
    """Cut an IPv4 frame's payload (the TCP segment) into fragments, one per ``(start, end)``
    byte range, in the order given.

    Ranges may overlap, leave gaps or repeat; each start must be a multiple
    of 8 (the fragment offset unit).  The fragment that ends the payload has
    MF clear, the others MF set; DF is cleared.  ``ip_id`` replaces the IP ID
    (fragments of one datagram share it).
    """
    if frame[12:14] != b"\x08\x00":
        raise UsageError("fragment_ipv4: not an IPv4 frame (use fragment_ipv6)")
    ihl = (frame[14] & 0x0F) * 4
    eth_ip = frame[: ETH_HLEN + ihl]
    (total,) = struct.unpack_from("!H", frame, ETH_HLEN + 2)
    payload = frame[ETH_HLEN + ihl : ETH_HLEN + total]
    out = []
    for start, end in ranges:
        _check_fragment_range(start, end, len(payload))
        header = bytearray(eth_ip)
        more = 0x2000 if end < len(payload) else 0
        struct.pack_into("!H", header, ETH_HLEN + 2, ihl + end - start)
        if ip_id is not None:
            struct.pack_into("!H", header, ETH_HLEN + 4, ip_id)
        struct.pack_into("!H", header, ETH_HLEN + 6, more | (start // 8))
        struct.pack_into("!H", header, ETH_HLEN + 10, 0)
        struct.pack_into("!H", header, ETH_HLEN + 10, internet_checksum(bytes(header[ETH_HLEN:])))
        out.append(bytes(header) + payload[start:end])
    return out


def fragment_ipv6(frame: bytes, ranges: list[tuple[int, int]], *, ident: int = 0x7C9E) -> list[bytes]:
    """The same for IPv6: each fragment carries a Fragment extension header (RFC 8200 4.5)."""
    if frame[12:14] != b"\x86\xdd":
        raise UsageError("fragment_ipv6: not an IPv6 frame")
    base = bytearray(frame[: ETH_HLEN + 40])
    next_header = base[ETH_HLEN + 6]
    (plen,) = struct.unpack_from("!H", frame, ETH_HLEN + 4)
    payload = frame[ETH_HLEN + 40 : ETH_HLEN + 40 + plen]
    out = []
    for start, end in ranges:
        _check_fragment_range(start, end, len(payload))
        header = bytearray(base)
        header[ETH_HLEN + 6] = 44  # Fragment header follows
        struct.pack_into("!H", header, ETH_HLEN + 4, 8 + end - start)
        more = 1 if end < len(payload) else 0
        frag = struct.pack("!BBHI", next_header, 0, (start // 8) << 3 | more, ident)
        out.append(bytes(header) + frag + payload[start:end])
    return out
