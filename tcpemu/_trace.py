"""One readable line per segment, as tcpdump and packetdrill users read them."""

from __future__ import annotations

from ._state import seq_diff
from .wire import ETH_HLEN, FLAGS, OptionKind, Segment, TcpFlags, TcpOption

_ACK = int(TcpFlags.ACK)
_SACK = int(OptionKind.SACK)


def _rel(value: int, base: int | None) -> int:
    return value if base is None else seq_diff(value, base) % (1 << 32)


def _option_text(option: TcpOption, ack_base: int | None) -> str:
    """An option as text; SACK edges, like the ack, relative to the receiver's ISN."""
    if option.kind == _SACK and ack_base is not None and len(option.data) % 8 == 0:
        blocks = option.value()
        if isinstance(blocks, list):
            return "sack " + " ".join(f"{_rel(a, ack_base)}:{_rel(b, ack_base)}" for a, b in blocks)
    return str(option)


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
    fields a connection's trace keeps.

    seq is relative to the sender's ISN, ack to the receiver's (when known).
    """
    s = _rel(seq, seq_base)
    short = FLAGS[flags & 0x1FF].short()
    line = f"{time:10.6f} {label}{'>' if outgoing else '<'} {short:<3} {s}:{s + length}({length})"
    if flags & _ACK:
        line += f" ack {_rel(ack, ack_base)}"
    line += f" win {window}"
    if options:
        line += " <" + ", ".join(_option_text(o, ack_base) for o in options) + ">"
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
    IPv6 extension headers)."""
    tcp = ETH_HLEN + (20 if frame[12:14] == b"\x08\x00" else 40)
    return frame[tcp + 20 : tcp + (frame[tcp + 12] >> 4) * 4]
