"""Deliberate malformation, applied to encoded frames (never a flag in the core).

Each function takes the bytes of an Ethernet/IP/TCP frame built by tcpemu
and returns new bytes with one thing wrong on purpose.  Offsets are found
from the frame itself, so IPv4 (with or without IP options) and IPv6 work.
"""

from __future__ import annotations

import struct

from ._errors import UsageError
from .wire import ETH_HLEN, classify_untrusted

__all__ = [
    "set_tcp_checksum",
    "corrupt_tcp_checksum",
    "corrupt_ip_checksum",
    "set_data_offset",
    "set_ip_total_length",
    "truncate",
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
