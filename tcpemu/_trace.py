"""Segments in packetdrill's notation, and the trace's one line per segment.

``S. 0:0(0) ack 1 win 65535 <mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>``:
the same text in a connection's trace, in ``str(Message)``, in
:mod:`tcpemu.notation`'s failures and in the packetdrill runner's reports.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from ._state import SEQ_MOD
from .wire import ETH_HLEN, OptionKind, Segment, TcpFlags, TcpOption

__all__ = ["format_flags", "format_options", "format_segment", "format_fields"]


# packetdrill's letters, in the order it prints them (``FP.``, ``S.E``, ``SEW``)
_FLAG_ORDER: Final = (
    ("F", TcpFlags.FIN),
    ("S", TcpFlags.SYN),
    ("R", TcpFlags.RST),
    ("P", TcpFlags.PSH),
    (".", TcpFlags.ACK),
    ("U", TcpFlags.URG),
    ("E", TcpFlags.ECE),
    ("W", TcpFlags.CWR),
    ("A", TcpFlags.AE),
)


def format_flags(flags: TcpFlags | int) -> str:
    """packetdrill's letters for ``flags``, ``-`` for none."""
    f = int(flags)
    return "".join(ch for ch, bit in _FLAG_ORDER if f & bit) or "-"


def _rel(value: int, base: int | None) -> int:
    return value if base is None else (value - base) % SEQ_MOD


def format_options(options: Sequence[TcpOption], sack_base: int | None = None) -> str:
    """``<mss 1460,sackOK,TS val 1 ecr 0,nop,wscale 7>`` (SACK blocks relative to ``sack_base``)."""
    out = []
    for opt in options:
        kind, data = opt.kind, opt.data
        value = opt.value()
        if kind == OptionKind.NOP:
            out.append("nop")
        elif kind == OptionKind.EOL:
            out.append("eol")
        elif kind == OptionKind.SACK_PERMITTED and not data:
            out.append("sackOK")
        elif kind == OptionKind.MSS and len(data) == 2:
            out.append(f"mss {value}")
        elif kind == OptionKind.WSCALE and len(data) == 1:
            out.append(f"wscale {value}")
        elif kind == OptionKind.TIMESTAMP and len(data) == 8:
            val, ecr = struct.unpack("!II", data)
            out.append(f"TS val {val} ecr {ecr}")
        elif kind == OptionKind.SACK and data and len(data) % 8 == 0:
            blocks = struct.unpack(f"!{len(data) // 4}I", data)
            out.append(
                "sack "
                + " ".join(
                    f"{_rel(blocks[i], sack_base)}:{_rel(blocks[i + 1], sack_base)}"
                    for i in range(0, len(blocks), 2)
                )
            )
        else:
            out.append(f"opt{kind} {data.hex() or '-'}")
    return "<" + ",".join(out) + ">"


def format_segment(
    flags: TcpFlags | int,
    seq: int,
    ack: int,
    window: int,
    options: Sequence[TcpOption],
    length: int,
    *,
    urgent: int = 0,
    seq_base: int | None = None,
    ack_base: int | None = None,
) -> str:
    """One segment in packetdrill notation, numbers relative to the bases given (None: absolute).

    SACK blocks acknowledge the receiver's data, so they are relative to ``ack_base``.
    """
    s = _rel(seq, seq_base)
    text = f"{format_flags(flags)} {s}:{(s + length) % SEQ_MOD}({length})"
    if int(flags) & TcpFlags.ACK:
        text += f" ack {_rel(ack, ack_base)}"
    text += f" win {window}"
    if int(flags) & TcpFlags.URG or urgent:
        text += f" urg {urgent}"
    if options:
        text += " " + format_options(options, ack_base)
    return text


def format_fields(
    seq: int,
    ack: int,
    flags: int,
    window: int,
    options: tuple[TcpOption, ...],
    length: int,
    *,
    time: float,
    outgoing: bool,
    seq_base: int | None,
    ack_base: int | None,
    label: str = "",
    note: str = "",
) -> str:
    """``0.000123 conn > S. 0:0(0) ack 1 win 65535 <mss 1460>`` from the
    fields a connection's trace keeps (the segment in packetdrill's notation).

    seq is relative to the sender's ISN, ack to the receiver's (when known).
    """
    segment = format_segment(flags, seq, ack, window, options, length, seq_base=seq_base, ack_base=ack_base)
    line = f"{time:10.6f} {label}{'>' if outgoing else '<'} {segment}"
    if note:
        line += f" [{note}]"
    return line


# A connection's trace keeps, per segment, (time, "<" or ">", seq, ack, flags,
# window, option bytes, payload length, note), and per event (time, "!",
# text): numbers, strings and bytes only, so that the collector stops
# walking a record after its first pass (a deep trace of Messages and
# TcpOptions, which it walks for ever, made every full collection long),
# and without the payload (1,000 full segments are 1.4 MB per connection).
TraceRecord = tuple[object, ...]


def _record(t: float, direction: str, seg: Segment, options: bytes, note: str = "") -> TraceRecord:
    return (t, direction, seg.seq, seg.ack, int(seg.flags), seg.window, options, len(seg.payload), note)


def _template_options(frame: bytes) -> bytes:
    """The TCP option bytes of a frame a template built (no IP options or
    IPv6 extension headers; an 802.1Q tag is stepped over)."""
    eth = ETH_HLEN + 4 if frame[12:14] == b"\x81\x00" else ETH_HLEN
    tcp = eth + (20 if frame[eth - 2 : eth] == b"\x08\x00" else 40)
    return frame[tcp + 20 : tcp + (frame[tcp + 12] >> 4) * 4]
