"""Wire layer: Ethernet/IPv4/IPv6/TCP frames as data, parsed and built.

A parsed :class:`Segment` (TCP fields) and :class:`Frame` (the segment plus
its Ethernet and IP envelope) are separate from bytes.  Parsers of untrusted
input are named ``*_untrusted`` and raise only
:class:`~tcpemu.MalformedFrameError`.  The hot path of the engine uses
:func:`classify_untrusted` (fixed offsets, ``struct.unpack_from``) and
:func:`parse_tcp_untrusted`; building goes through dpkt.

Deliberate malformation is applied to encoded bytes, never as a flag here.
"""

from __future__ import annotations

import enum
import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Final, NamedTuple

import dpkt

from ._errors import MalformedFrameError, UsageError

__all__ = [
    "TcpFlags",
    "OptionKind",
    "TcpOption",
    "Segment",
    "Frame",
    "IPAddress",
    "ETH_P_IP",
    "ETH_P_IPV6",
    "classify_untrusted",
    "parse_tcp_untrusted",
    "parse_frame_untrusted",
    "decode_options_untrusted",
    "find_option",
    "encode_options",
    "build_frame",
    "FrameTemplate",
    "ones_sum",
    "flow_key",
    "listen_key",
    "internet_checksum",
    "tcp_checksum_ok",
    "ipv4_header_checksum_ok",
    "parse_mac",
    "format_mac",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
IPPROTO_TCP = 6
ETH_HLEN = 14
SEQ_MOD = 1 << 32


class TcpFlags(enum.IntFlag):
    """TCP header flags, including the AE bit (formerly NS, RFC 3540/AccECN)."""

    FIN = 0x001
    SYN = 0x002
    RST = 0x004
    PSH = 0x008
    ACK = 0x010
    URG = 0x020
    ECE = 0x040
    CWR = 0x080
    AE = 0x100

    def short(self) -> str:
        """tcpdump-style letters: ``S.`` for SYN|ACK, ``P.`` for PSH|ACK, ``.`` for ACK."""
        letters = "".join(
            ch
            for bit, ch in (
                (TcpFlags.SYN, "S"),
                (TcpFlags.FIN, "F"),
                (TcpFlags.RST, "R"),
                (TcpFlags.PSH, "P"),
                (TcpFlags.URG, "U"),
                (TcpFlags.ECE, "E"),
                (TcpFlags.CWR, "W"),
                (TcpFlags.AE, "A"),
            )
            if self & bit
        )
        if self & TcpFlags.ACK:
            letters += "."
        return letters or "none"


class OptionKind(enum.IntEnum):
    EOL = 0
    NOP = 1
    MSS = 2
    WSCALE = 3
    SACK_PERMITTED = 4
    SACK = 5
    TIMESTAMP = 8


class _OptionFields(NamedTuple):
    kind: int
    data: bytes = b""


class TcpOption(_OptionFields):
    """One TCP option as on the wire: its kind and the bytes after kind/length.

    EOL and NOP have no length byte; their ``data`` is empty.  A named
    tuple rather than a frozen dataclass: the parser makes one per option
    of every segment, and a tuple is made in a third of the time (the
    parsers make them with ``tuple.__new__``, past the checks below, which
    are for what a test writes).
    """

    __slots__ = ()

    def __new__(cls, kind: int, data: bytes = b"") -> TcpOption:
        if not isinstance(kind, int) or isinstance(kind, bool) or not 0 <= kind <= 255:
            raise UsageError(f"TcpOption kind must be an int 0..255, got {kind!r}")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"TcpOption data must be bytes, got {type(data).__name__}")
        if len(data) > 38:
            raise UsageError(f"TcpOption data of {len(data)} bytes does not fit a TCP header (at most 38)")
        return tuple.__new__(cls, (kind, bytes(data)))

    @classmethod
    def mss(cls, value: int) -> TcpOption:
        check_uint("mss", value, 0xFFFF)
        return cls(OptionKind.MSS, struct.pack("!H", value))

    @classmethod
    def wscale(cls, shift: int) -> TcpOption:
        check_uint("wscale shift", shift, 255)
        return cls(OptionKind.WSCALE, bytes([shift]))

    @classmethod
    def sack_permitted(cls) -> TcpOption:
        return cls(OptionKind.SACK_PERMITTED)

    @classmethod
    def timestamps(cls, tsval: int, tsecr: int) -> TcpOption:
        check_uint("TSval", tsval, 0xFFFFFFFF)
        check_uint("TSecr", tsecr, 0xFFFFFFFF)
        return cls(OptionKind.TIMESTAMP, struct.pack("!II", tsval, tsecr))

    @classmethod
    def sack(cls, blocks: list[tuple[int, int]]) -> TcpOption:
        if not isinstance(blocks, (list, tuple)) or not 1 <= len(blocks) <= 4:
            raise UsageError(f"SACK takes 1 to 4 (left, right) blocks, got {blocks!r}")
        for block in blocks:
            if not isinstance(block, (list, tuple)) or len(block) != 2:
                raise UsageError(f"a SACK block is a (left, right) pair, got {block!r}")
            for edge in block:
                check_uint("SACK block edge", edge, 0xFFFFFFFF)
        return cls(OptionKind.SACK, b"".join(struct.pack("!II", a, b) for a, b in blocks))

    def value(self) -> object:
        """The decoded value for known kinds with the right length, else the raw bytes."""
        kind, data = self.kind, self.data
        if kind == OptionKind.MSS and len(data) == 2:
            return struct.unpack("!H", data)[0]
        if kind == OptionKind.WSCALE and len(data) == 1:
            return data[0]
        if kind == OptionKind.TIMESTAMP and len(data) == 8:
            return struct.unpack("!II", data)
        if kind == OptionKind.SACK and len(data) % 8 == 0:
            return [struct.unpack_from("!II", data, i) for i in range(0, len(data), 8)]
        if kind == OptionKind.SACK_PERMITTED and not data:
            return True
        return data

    def __str__(self) -> str:
        try:
            name = OptionKind(self.kind).name.lower()
        except ValueError:
            name = f"opt{self.kind}"
        if self.kind in (OptionKind.EOL, OptionKind.NOP, OptionKind.SACK_PERMITTED):
            return {0: "eol", 1: "nop", 4: "sackOK"}[self.kind]
        value = self.value()
        if self.kind == OptionKind.TIMESTAMP and isinstance(value, tuple):
            return f"TS val {value[0]} ecr {value[1]}"
        if self.kind == OptionKind.SACK and isinstance(value, list):
            return "sack " + " ".join(f"{a}:{b}" for a, b in value)
        if isinstance(value, bytes):
            return f"{name} {value.hex() or '-'}"
        return f"{name} {value}"


def check_uint(what: str, value: object, top: int) -> None:
    """An int (not a bool) in 0..top, else UsageError naming it: the one check of a
    field's range, for the layers above too."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise UsageError(f"{what} must be an int 0..{top}, got {value!r}")


def encode_options(options: tuple[TcpOption, ...] | list[TcpOption]) -> bytes:
    """Options to bytes, padded with EOL to a multiple of 4 (the data offset unit)."""
    out = bytearray()
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, tuple) for o in options):
        raise UsageError(f"options must be a list of tcpemu.TcpOption, got {options!r}")
    for kind, data in options:
        if kind <= 1:  # EOL and NOP: one byte, no length
            out.append(kind)
        else:
            if len(data) > 253:
                raise UsageError(f"option kind {kind}: {len(data)} data bytes do not fit")
            out.append(kind)
            out.append(len(data) + 2)
            out += data
    out += b"\x00" * (-len(out) % 4)
    if len(out) > 40:
        raise UsageError(f"options take {len(out)} bytes; a TCP header holds at most 40")
    return bytes(out)


_NOP: Final = TcpOption(1)
# tuple.__new__ makes an option as NamedTuple._make does, at half the cost of
# TcpOption(...): the parsers below make one per option they read
_new_option: Final = tuple.__new__


_SACK_PERMITTED: Final = TcpOption(4, b"")
_SYN_SHAPE_MID: Final = b"\x04\x02\x08\x0a"  # SACK-permitted, then the timestamps' kind and length
_SYN_SHAPE_TAIL: Final = b"\x01\x03\x03"  # NOP, the window scale's kind and length
_TS_LEAD: Final = b"\x01\x01\x08\x0a"  # NOP, NOP, timestamps (kind 8, length 10): as Linux sends them


# NOP NOP TS options by their 8 value bytes.  A flow's TS value moves once
# a millisecond, so the segments of a busy one share one tuple, and the
# collector has one object to keep in its lists per message instead of three
# (a TcpOption, being a NamedTuple, is never taken out of them).
_TS_OPTIONS: dict[bytes, tuple[TcpOption, ...]] = {}


def _timestamp_options(values: bytes) -> tuple[TcpOption, ...]:
    options = _TS_OPTIONS.get(values)
    if options is None:
        if len(_TS_OPTIONS) >= 1024:
            _TS_OPTIONS.clear()
        options = _TS_OPTIONS[values] = (_NOP, _NOP, _new_option(TcpOption, (8, values)))
    return options


def find_option(options: tuple[TcpOption, ...], kind: int) -> TcpOption | None:
    """The first option of ``kind``, or None."""
    for opt in options:
        if opt.kind == kind:
            return opt
    return None


def decode_options_untrusted(buf: bytes | memoryview) -> tuple[TcpOption, ...]:
    """Parse the option bytes of a TCP header; stops at EOL."""
    # The two layouts Linux sends most, read at fixed offsets: NOP NOP
    # timestamps on every segment, and MSS, SACK-permitted, timestamps, NOP,
    # window scale on its SYNs.  The result is what the loop gives.
    n = len(buf)
    if n == 12 and buf[:4] == _TS_LEAD:
        return _timestamp_options(bytes(buf[4:12]))
    if n == 20 and buf[:2] == b"\x02\x04" and buf[4:8] == _SYN_SHAPE_MID and buf[16:19] == _SYN_SHAPE_TAIL:
        return (
            _new_option(TcpOption, (2, bytes(buf[2:4]))),
            _SACK_PERMITTED,
            _new_option(TcpOption, (8, bytes(buf[8:16]))),
            _NOP,
            _new_option(TcpOption, (3, bytes(buf[19:20]))),
        )
    return _decode_options(buf)


def _decode_options(buf: bytes | memoryview) -> tuple[TcpOption, ...]:
    """Any option bytes, one option at a time."""
    opts: list[TcpOption] = []
    i, n = 0, len(buf)
    while i < n:
        kind = buf[i]
        if kind == 0:  # EOL (plain ints: enum members are slow to look up here)
            break
        if kind == 1:  # NOP
            opts.append(_NOP)
            i += 1
            continue
        if i + 1 >= n:
            raise MalformedFrameError("tcp-option", f"option kind {kind} at {i} has no length byte")
        length = buf[i + 1]
        if length < 2 or i + length > n:
            raise MalformedFrameError(
                "tcp-option", f"option kind {kind} at {i} has length {length}, {n - i} bytes left"
            )
        opts.append(_new_option(TcpOption, (kind, bytes(buf[i + 2 : i + length]))))
        i += length
    return tuple(opts)


@dataclass(slots=True)
class Segment:
    """The TCP part of a frame, without bytes of its own.

    ``data_offset`` is None when building (computed from the options); a
    parsed segment carries the value from the wire, as does ``checksum``.
    """

    src_port: int
    dst_port: int
    seq: int
    ack: int
    flags: TcpFlags
    window: int
    urgent: int = 0
    options: tuple[TcpOption, ...] = ()
    payload: bytes = b""
    data_offset: int | None = None
    checksum: int | None = None

    @property
    def seq_len(self) -> int:
        """Sequence space taken: payload plus one for SYN and one for FIN."""
        f = int(self.flags)
        return len(self.payload) + ((f >> 1) & 1) + (f & 1)

    def option(self, kind: int) -> TcpOption | None:
        return find_option(self.options, kind)


@dataclass(slots=True)
class Frame:
    """A whole Ethernet frame carrying one TCP segment over IPv4 or IPv6."""

    src_mac: bytes
    dst_mac: bytes
    src_ip: IPAddress
    dst_ip: IPAddress
    segment: Segment
    ttl: int = 64
    tos: int = 0
    ip_id: int = 0
    df: bool = True
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def version(self) -> int:
        return self.src_ip.version


FLAGS = [TcpFlags(i) for i in range(512)]  # construction through the enum is slow
# The bits as plain ints, for the per-segment code: a module global and one `&` on an int
# cost less than a TcpFlags member looked up on its class and an IntFlag operation.
FIN_BIT: Final = int(TcpFlags.FIN)
SYN_BIT: Final = int(TcpFlags.SYN)
RST_BIT: Final = int(TcpFlags.RST)
PSH_BIT: Final = int(TcpFlags.PSH)
ACK_BIT: Final = int(TcpFlags.ACK)
URG_BIT: Final = int(TcpFlags.URG)
_ETHERTYPE = struct.Struct("!H")
_PORTS = struct.Struct("!HH")
_TCP_HDR = struct.Struct("!HHIIHHHH")


def classify_untrusted(buf: bytes | memoryview) -> tuple[bytes, bytes, int, int]:
    """Fixed-offset look at a frame, for dispatch before any full parse.

    Returns ``(flow_key, listen_key, tcp_start, tcp_end)``: flow_key is
    src ip + dst ip + src port + dst port as bytes (see :func:`flow_key`),
    listen_key is dst ip + dst port (see :func:`listen_key`), and the TCP
    header starts at ``tcp_start``, the IP payload ends at ``tcp_end``.
    """
    n = len(buf)
    if n < ETH_HLEN + 20:
        raise MalformedFrameError("truncated", f"{n} bytes, too short for Ethernet and IP headers")
    (ethertype,) = _ETHERTYPE.unpack_from(buf, 12)
    if ethertype == ETH_P_IP:
        vihl = buf[14]
        if vihl >> 4 != 4:
            raise MalformedFrameError("ip-version", f"ethertype IPv4 but version {vihl >> 4}")
        ihl = (vihl & 0x0F) * 4
        if ihl < 20:
            raise MalformedFrameError("ip-header-length", f"IHL {ihl} < 20")
        total = (buf[16] << 8) | buf[17]
        if total < ihl or ETH_HLEN + total > n:
            raise MalformedFrameError(
                "ip-length", f"IPv4 total length {total} with IHL {ihl}, {n - ETH_HLEN} bytes present"
            )
        if buf[23] != IPPROTO_TCP:
            raise MalformedFrameError("not-tcp", f"IP protocol {buf[23]}")
        if ((buf[20] << 8) | buf[21]) & 0x3FFF:
            raise MalformedFrameError("ip-fragment", "IPv4 fragment (reassembly not implemented)")
        start = ETH_HLEN + ihl
        end = ETH_HLEN + total
        addrs = bytes(buf[26:34])
        dst = addrs[4:]
    elif ethertype == ETH_P_IPV6:
        if n < ETH_HLEN + 40:
            raise MalformedFrameError("truncated", f"{n} bytes, too short for an IPv6 header")
        if buf[14] >> 4 != 6:
            raise MalformedFrameError("ip-version", f"ethertype IPv6 but version {buf[14] >> 4}")
        if buf[20] != IPPROTO_TCP:
            raise MalformedFrameError(
                "not-tcp", f"IPv6 next header {buf[20]} (extension headers not implemented)"
            )
        plen = (buf[18] << 8) | buf[19]
        start = ETH_HLEN + 40
        end = start + plen
        if end > n:
            raise MalformedFrameError("ip-length", f"IPv6 payload length {plen}, {n - start} bytes present")
        addrs = bytes(buf[22:54])
        dst = addrs[16:]
    else:
        raise MalformedFrameError("not-ip", f"ethertype 0x{ethertype:04x}")
    if end - start < 20:
        raise MalformedFrameError("truncated", f"{end - start} bytes of TCP, header needs 20")
    ports = bytes(buf[start : start + 4])
    return addrs + ports, dst + ports[2:], start, end


# from the ethertype to the urgent pointer (IPv4), from the version to the urgent pointer (IPv6)
_PREDICT_V4 = struct.Struct("!HBxH2xHxB2x12xIIHH2xH")
_PREDICT_V6 = struct.Struct("!B3xHBx36xIIHH2xH")

PredictedFields = tuple[bytes, int, int, int, int, int, tuple[TcpOption, ...], bytes, int, int]


def predict_untrusted(frame: bytes) -> PredictedFields | None:
    """Header prediction's look at a frame, for the pump's common case.

    A TCP segment of the usual shape (IPv4 with a 20-byte header and not a
    fragment, or IPv6 with TCP as the next header; no TCP options or only
    NOP NOP timestamps) gives ``(flow_key, seq, ack, flags, window,
    urgent, options, payload, tcp_start, tcp_end)`` from one unpack;
    anything else gives None (never an exception) and takes
    :func:`classify_untrusted` and :func:`parse_tcp_untrusted`, which say
    what is wrong with it.  The fields equal what those two return.
    """
    n = len(frame)
    if n < ETH_HLEN + 40:
        return None
    if frame[12:14] == b"\x08\x00":
        _, vihl, total, frag, proto, seq, ack, off_flags, window, urgent = _PREDICT_V4.unpack_from(frame, 12)
        if vihl != 0x45 or proto != IPPROTO_TCP or frag & 0x3FFF:
            return None
        start, end, key = ETH_HLEN + 20, ETH_HLEN + total, frame[26:38]
    elif frame[12:14] == b"\x86\xdd" and n >= ETH_HLEN + 60:
        version, plen, nxt, seq, ack, off_flags, window, urgent = _PREDICT_V6.unpack_from(frame, ETH_HLEN)
        if version >> 4 != 6 or nxt != IPPROTO_TCP:
            return None
        start, end, key = ETH_HLEN + 40, ETH_HLEN + 40 + plen, frame[22:58]
    else:
        return None
    doff = (off_flags >> 12) * 4
    if end > n or start + doff > end:
        return None
    if doff == 20:
        options: tuple[TcpOption, ...] = ()
    elif doff == 32 and frame[start + 20 : start + 24] == _TS_LEAD:
        options = _timestamp_options(frame[start + 24 : start + 32])
    else:
        return None
    return key, seq, ack, off_flags & 0x1FF, window, urgent, options, frame[start + doff : end], start, end


def parse_tcp_untrusted(buf: bytes | memoryview, start: int, end: int) -> Segment:
    """Parse the TCP header and payload in ``buf[start:end]``."""
    if end - start < 20:
        raise MalformedFrameError("truncated", f"{end - start} bytes of TCP, header needs 20")
    sport, dport, seq, ack, off_flags, window, checksum, urgent = _TCP_HDR.unpack_from(buf, start)
    doff = (off_flags >> 12) * 4
    if doff < 20:
        raise MalformedFrameError("tcp-data-offset", f"data offset {doff} < 20")
    if start + doff > end:
        raise MalformedFrameError(
            "tcp-data-offset", f"data offset {doff} past the {end - start} bytes of the segment"
        )
    options = decode_options_untrusted(buf[start + 20 : start + doff]) if doff > 20 else ()
    return Segment(
        src_port=sport,
        dst_port=dport,
        seq=seq,
        ack=ack,
        flags=FLAGS[off_flags & 0x1FF],
        window=window,
        urgent=urgent,
        options=options,
        payload=bytes(buf[start + doff : end]),
        data_offset=doff,
        checksum=checksum,
    )


def parse_frame_untrusted(buf: bytes | memoryview) -> Frame:
    """Parse a whole Ethernet/IP/TCP frame."""
    _, _, start, end = classify_untrusted(buf)
    seg = parse_tcp_untrusted(buf, start, end)
    if buf[12] == 0x08:
        src_ip: IPAddress = ipaddress.IPv4Address(bytes(buf[26:30]))
        dst_ip: IPAddress = ipaddress.IPv4Address(bytes(buf[30:34]))
        ttl, tos = buf[22], buf[15]
        (ip_id,) = struct.unpack_from("!H", buf, 18)
        df = bool(buf[20] & 0x40)
    else:
        src_ip = ipaddress.IPv6Address(bytes(buf[22:38]))
        dst_ip = ipaddress.IPv6Address(bytes(buf[38:54]))
        ttl = buf[21]
        tos = ((buf[14] & 0x0F) << 4) | (buf[15] >> 4)
        ip_id, df = 0, False
    return Frame(
        src_mac=bytes(buf[6:12]),
        dst_mac=bytes(buf[0:6]),
        src_ip=src_ip,
        dst_ip=dst_ip,
        segment=seg,
        ttl=ttl,
        tos=tos,
        ip_id=ip_id,
        df=df,
    )


def build_frame(
    frame: Frame, *, raw_options: bytes | None = None, ip_options: bytes = b"", reserved_flags: int = 0
) -> bytes:
    """Encode a frame with correct IP and TCP checksums (built with dpkt).

    ``raw_options`` replaces the encoded options (a multiple of 4 bytes);
    ``ip_options`` go into the IPv4 header; ``reserved_flags`` sets the three
    reserved bits above AE.
    """
    seg = frame.segment
    opts = encode_options(seg.options) if raw_options is None else raw_options
    if len(opts) % 4 or len(opts) > 40:
        raise UsageError(f"TCP options take a multiple of 4 bytes, at most 40; got {len(opts)}")
    if len(ip_options) % 4 or len(ip_options) > 40:
        raise UsageError(f"IP options take a multiple of 4 bytes, at most 40; got {len(ip_options)}")
    tcp = dpkt.tcp.TCP(
        sport=seg.src_port,
        dport=seg.dst_port,
        seq=seg.seq % SEQ_MOD,
        ack=seg.ack % SEQ_MOD,
        flags=int(seg.flags) & 0x1FF,
        win=seg.window,
        urp=seg.urgent,
        off=(20 + len(opts)) // 4,
        opts=opts,
        data=seg.payload,
    )
    if frame.src_ip.version != frame.dst_ip.version:
        raise UsageError(f"source {frame.src_ip} and destination {frame.dst_ip} differ in IP version")
    if frame.src_ip.version == 4:
        ip: dpkt.Packet = dpkt.ip.IP(
            src=frame.src_ip.packed,
            dst=frame.dst_ip.packed,
            p=IPPROTO_TCP,
            ttl=frame.ttl,
            tos=frame.tos,
            id=frame.ip_id,
            df=1 if frame.df else 0,
            opts=ip_options,
            data=tcp,
        )
        if ip_options:
            ip.hl = 5 + len(ip_options) // 4
        ethertype = ETH_P_IP
    else:
        ip = dpkt.ip6.IP6(
            src=frame.src_ip.packed,
            dst=frame.dst_ip.packed,
            nxt=IPPROTO_TCP,
            plen=20 + len(opts) + len(seg.payload),
            hlim=frame.ttl,
            fc=frame.tos,
            data=tcp,
        )
        ethertype = ETH_P_IPV6
    eth = dpkt.ethernet.Ethernet(src=frame.src_mac, dst=frame.dst_mac, type=ethertype, data=ip)
    data = bytes(eth)
    if reserved_flags & 0x7:
        # dpkt's flags field is 9 bits wide: set the reserved three in the header
        # and fold the change into the checksum (RFC 1624), so it stays correct
        out = bytearray(data)
        tcp_at = ETH_HLEN + (20 + len(ip_options) if frame.src_ip.version == 4 else 40)
        old_word = int.from_bytes(out[tcp_at + 12 : tcp_at + 14], "big")
        out[tcp_at + 12] |= (reserved_flags & 0x7) << 1
        new_word = int.from_bytes(out[tcp_at + 12 : tcp_at + 14], "big")
        checksum = int.from_bytes(out[tcp_at + 16 : tcp_at + 18], "big")
        total = (~checksum & 0xFFFF) + (~old_word & 0xFFFF) + new_word
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        out[tcp_at + 16 : tcp_at + 18] = (~total & 0xFFFF).to_bytes(2, "big")
        data = bytes(out)
    return data


class FrameTemplate:
    """Prebuilt Ethernet and IP headers of one flow; :meth:`build` adds a TCP segment.

    The hot path's builder: headers are packed once, the TCP checksum's
    pseudo-header sum is kept, and a segment costs one header pack and one
    checksum.  Produces the same bytes as :func:`build_frame`.
    """

    __slots__ = ("_eth", "_ip_fixed", "_ip_sum", "_pseudo_sum", "_v4", "df", "tos", "ttl")

    def __init__(
        self,
        src_mac: bytes,
        dst_mac: bytes,
        src_ip: IPAddress,
        dst_ip: IPAddress,
        *,
        ttl: int = 64,
        tos: int = 0,
        df: bool = True,
        vlan: int | None = None,
    ) -> None:
        if src_ip.version != dst_ip.version:
            raise UsageError(f"source {src_ip} and destination {dst_ip} differ in IP version")
        self._v4 = src_ip.version == 4
        self._eth = dst_mac + src_mac + vlan_tag(vlan) + (b"\x08\x00" if self._v4 else b"\x86\xdd")
        self._ip_fixed = src_ip.packed + dst_ip.packed
        addr_sum = int.from_bytes(self._ip_fixed, "big") % 0xFFFF
        # pseudo-header without the length: addresses and the protocol number
        self._pseudo_sum = addr_sum + IPPROTO_TCP
        # the IPv4 header's words that do not change from frame to frame
        self._ip_sum = addr_sum + (0x4500 | tos) + (0x4000 if df else 0) + (ttl << 8 | IPPROTO_TCP)
        self.ttl, self.tos, self.df = ttl, tos, df  # fixed once made: the sums above hold them

    def build(self, seg: Segment, ip_id: int = 0) -> bytes:
        # Both checksums are summed from the integers, not read back from
        # bytes: 2**16 is 1 modulo 65535, so the ones' complement sum is a
        # plain sum modulo 65535 and the header words can be added as numbers.
        opts = encode_options(seg.options) if seg.options else b""
        payload = seg.payload
        doff = 20 + len(opts)
        tcp_len = doff + len(payload)
        seq, ack = seg.seq % SEQ_MOD, seg.ack % SEQ_MOD
        off_flags = doff << 10 | (int(seg.flags) & 0x1FF)
        total = (
            self._pseudo_sum + tcp_len + seg.src_port + seg.dst_port
            + (seq >> 16) + (seq & 0xFFFF) + (ack >> 16) + (ack & 0xFFFF)
            + off_flags + seg.window + seg.urgent
        )  # fmt: skip
        if opts:
            total += int.from_bytes(opts, "big")  # a multiple of 4 bytes: whole words
        if payload:
            total += int.from_bytes(payload, "big") << (8 if len(payload) % 2 else 0)
        total = total % 0xFFFF or 0xFFFF
        tcp = _TCP_HDR.pack(
            seg.src_port, seg.dst_port, seq, ack, off_flags, seg.window, ~total & 0xFFFF, seg.urgent
        )
        if self._v4:
            ip_len = 20 + tcp_len
            ip_sum = (self._ip_sum + ip_len + ip_id) % 0xFFFF or 0xFFFF
            ip = _IPV4_HDR.pack(
                0x45, self.tos, ip_len, ip_id, 0x4000 if self.df else 0, self.ttl, IPPROTO_TCP,
                ~ip_sum & 0xFFFF, self._ip_fixed,
            )  # fmt: skip
        else:
            ip = _IPV6_HDR.pack(0x60000000 | (self.tos << 20), tcp_len, IPPROTO_TCP, self.ttl, self._ip_fixed)
        return b"".join((self._eth, ip, tcp, opts, payload))


_IPV4_HDR = struct.Struct("!BBHHHBBH8s")
_IPV6_HDR = struct.Struct("!IHBB32s")


ETH_P_8021Q: Final = 0x8100
_TPID: Final = b"\x81\x00"


def vlan_tag(vlan: int | None) -> bytes:
    """The 802.1Q tag (TPID 0x8100 and TCI) of VLAN ``vlan``, priority 0; empty for None."""
    if vlan is None:
        return b""
    if not isinstance(vlan, int) or isinstance(vlan, bool) or not 0 <= vlan <= 4095:
        raise UsageError(f"vlan must be a VLAN ID 0..4095 or None, got {vlan!r}")
    return _TPID + vlan.to_bytes(2, "big")


def add_vlan_tag(frame: bytes, vlan: int | None) -> bytes:
    """``frame`` with an 802.1Q tag after its MACs (unchanged for None)."""
    return frame if vlan is None else frame[:12] + vlan_tag(vlan) + frame[12:]


def strip_vlan_tag(frame: bytes) -> tuple[bytes, int | None]:
    """(the frame without its 802.1Q tag, the VLAN ID), or (frame, None) when untagged."""
    if frame[12:14] != _TPID or len(frame) < 18:
        return frame, None
    return frame[:12] + frame[16:], int.from_bytes(frame[14:16], "big") & 0x0FFF


def flow_key(src_ip: IPAddress, src_port: int, dst_ip: IPAddress, dst_port: int) -> bytes:
    """The key :func:`classify_untrusted` computes for a frame from src to dst."""
    return src_ip.packed + dst_ip.packed + _PORTS.pack(src_port, dst_port)


def listen_key(dst_ip: IPAddress, dst_port: int) -> bytes:
    """The listen key :func:`classify_untrusted` computes for a frame to dst."""
    return dst_ip.packed + struct.pack("!H", dst_port)


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The RFC 1071 ones' complement sum of 16-bit big-endian words (odd data zero-padded).

    2**16 is 1 modulo 65535, so the sum of the words is the whole buffer
    read as one big integer, modulo 65535: one C-level conversion instead
    of a loop over words.
    """
    n = int.from_bytes(data, "big")
    if len(data) % 2:
        n <<= 8
    total = n % 0xFFFF
    return 0xFFFF if total == 0 and n else total


def internet_checksum(data: bytes | bytearray | memoryview) -> int:
    """RFC 1071 checksum: the complement of :func:`ones_sum`."""
    return ~ones_sum(data) & 0xFFFF


def tcp_checksum_ok(buf: bytes | memoryview) -> bool:
    """True when the TCP checksum of an Ethernet frame is right (IPv4 or IPv6)."""
    _, _, start, end = classify_untrusted(buf)
    tcp = bytes(buf[start:end])
    if buf[12] == 0x08:
        pseudo = bytes(buf[26:34]) + struct.pack("!BBH", 0, IPPROTO_TCP, len(tcp))
    else:
        pseudo = bytes(buf[22:54]) + struct.pack("!IxxxB", len(tcp), IPPROTO_TCP)
    return internet_checksum(pseudo + tcp) == 0


def ipv4_header_checksum_ok(buf: bytes | memoryview) -> bool:
    """True when the IPv4 header checksum of an Ethernet frame is right."""
    _, _, start, _ = classify_untrusted(buf)
    if buf[12] != 0x08:
        raise UsageError("ipv4_header_checksum_ok: not an IPv4 frame")
    return internet_checksum(buf[ETH_HLEN:start]) == 0


def parse_mac(mac: str | bytes) -> bytes:
    """``"02:00:00:00:00:01"`` (or 6 bytes) to 6 bytes; a clear error otherwise."""
    if isinstance(mac, (bytes, bytearray, memoryview)):
        if len(mac) != 6:
            raise UsageError(f"MAC address must be 6 bytes, got {len(mac)}: {bytes(mac).hex(':')}")
        return bytes(mac)
    if not isinstance(mac, str):
        raise UsageError(
            f"MAC address must be a str like 02:00:5e:00:00:01 or 6 bytes, got {type(mac).__name__} {mac!r}"
        )
    parts = mac.split(":")
    try:
        if len(parts) != 6:
            raise ValueError
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise UsageError(
            f"not a MAC address: {mac!r} (expected six hex octets like 02:00:5e:00:00:01)"
        ) from None


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)
