"""One readable line per segment, as tcpdump and packetdrill users read them."""

from __future__ import annotations

from .core import seq_diff
from .wire import FLAGS, OptionKind, TcpFlags, TcpOption

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
