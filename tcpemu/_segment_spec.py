"""Every field of one segment and of its IP header: what :meth:`Connection.segment`
makes and :meth:`Connection.send_segments` sends, exactly as described."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from . import malform
from ._args import _check_int, _check_options
from ._errors import UsageError
from .wire import (
    Frame,
    IPAddress,
    Segment,
    TcpFlags,
    TcpOption,
    add_vlan_tag,
    build_frame,
    encode_options,
    parse_mac,
    vlan_tag,
)

__all__ = ["SegmentSpec"]


@dataclass
class SegmentSpec:
    """Every field of one segment and of its IP header, for :meth:`Connection.send_segments`.

    ``options`` is a list of :class:`~tcpemu.TcpOption` or raw bytes (put
    as they are, padded to 4 bytes); ``data_offset`` (in 32-bit words) and
    ``checksum`` override what encoding computed, after encoding; so do
    ``ip_checksum`` and ``ip_total_length``.  ``tos`` carries the ECN bits
    in its low two; ``ip_options`` are IPv4 header options.  The addresses
    and ports (filled in by :meth:`Connection.segment` from its connection)
    are fields too: a test may send from another source on purpose.
    """

    payload: bytes = b""
    seq: int = 0
    ack: int = 0
    flags: TcpFlags | int = 0
    window: int = 0
    urgent: int = 0
    options: list[TcpOption] | bytes = field(default_factory=list)
    data_offset: int | None = None
    checksum: int | None = None
    ttl: int = 64
    tos: int = 0
    ip_id: int = 0
    df: bool = True
    ip_options: bytes = b""
    ip_checksum: int | None = None
    ip_total_length: int | None = None
    src_port: int = 0
    dst_port: int = 0
    src_mac: bytes = bytes(6)
    dst_mac: bytes = bytes(6)
    src_ip: IPAddress | None = None
    dst_ip: IPAddress | None = None
    vlan: int | None = None
    """An 802.1Q tag with this VLAN ID after the MACs (None: untagged)."""

    def check(self) -> None:
        """Every field in its range on the wire, else UsageError naming it."""
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise UsageError(f"segment: payload must be bytes, got {type(self.payload).__name__}")
        for name, top in (
            ("src_port", 0xFFFF),
            ("dst_port", 0xFFFF),
            ("seq", 0xFFFFFFFF),
            ("ack", 0xFFFFFFFF),
            ("flags", 0xFFF),
            ("window", 0xFFFF),
            ("urgent", 0xFFFF),
            ("ttl", 255),
            ("tos", 255),
            ("ip_id", 0xFFFF),
        ):
            _check_int(f"segment: {name}", getattr(self, name), 0, top)
        for name, top in (
            ("data_offset", 15),
            ("checksum", 0xFFFF),
            ("ip_checksum", 0xFFFF),
            ("ip_total_length", 0xFFFF),
        ):
            if getattr(self, name) is not None:
                _check_int(f"segment: {name}", getattr(self, name), 0, top)
        vlan_tag(self.vlan)  # a VLAN ID 0..4095 or None, else UsageError
        if not isinstance(self.df, bool):
            raise UsageError(f"segment: df must be True or False, got {self.df!r}")
        if not isinstance(self.ip_options, bytes) or len(self.ip_options) > 40:
            raise UsageError(f"segment: ip_options must be at most 40 bytes, got {self.ip_options!r}")
        if isinstance(self.options, bytes):
            if len(self.options) > 40:
                raise UsageError(f"segment: raw options of {len(self.options)} bytes exceed 40")
        else:
            encode_options(_check_options("segment", self.options))

    def as_segment(self) -> Segment:
        """The segment as the connection records it (raw option bytes are not parsed back)."""
        opts = tuple(self.options) if isinstance(self.options, list) else ()
        return Segment(
            self.src_port,
            self.dst_port,
            self.seq % 2**32,
            self.ack % 2**32,
            TcpFlags(int(self.flags) & 0x1FF),
            self.window,
            self.urgent,
            opts,
            self.payload,
        )

    def encode(self) -> bytes:
        """The frame, every field as described."""
        self.check()  # fields may have been changed since segment() made it
        if self.src_ip is None or self.dst_ip is None or self.src_ip.version != self.dst_ip.version:
            raise UsageError(
                f"segment: src_ip and dst_ip must be addresses of one IP version, got {self.src_ip!r}, "
                f"{self.dst_ip!r}"
            )
        seg = self.as_segment()
        raw_opts = self.options if isinstance(self.options, bytes) else encode_options(self.options)
        raw_opts += b"\x00" * (-len(raw_opts) % 4)
        frame = Frame(
            parse_mac(self.src_mac),
            parse_mac(self.dst_mac),
            self.src_ip,
            self.dst_ip,
            seg,
            self.ttl,
            self.tos,
            self.ip_id,
            self.df,
        )
        data = build_frame(
            frame, raw_options=raw_opts, ip_options=self.ip_options, reserved_flags=int(self.flags) >> 9
        )
        if self.data_offset is not None:
            data = malform.set_data_offset(data, self.data_offset)
        if self.ip_total_length is not None:
            data = malform.set_ip_total_length(data, self.ip_total_length)
        if self.checksum is not None:
            data = malform.set_tcp_checksum(data, self.checksum)
        if self.ip_checksum is not None:
            b = bytearray(data)
            struct.pack_into("!H", b, 24, self.ip_checksum & 0xFFFF)
            data = bytes(b)
        # last: the tag moves every later header 4 bytes on, and the fixes above use the usual offsets
        return add_vlan_tag(data, self.vlan)
