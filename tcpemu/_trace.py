"""One readable line per segment, as tcpdump and packetdrill users read them."""

from __future__ import annotations

from .core import seq_diff
from .wire import FLAGS, TcpFlags, TcpOption

_ACK = int(TcpFlags.ACK)


def _rel(value: int, base: int | None) -> int:
    return value if base is None else seq_diff(value, base) % (1 << 32)


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
        line += " <" + ", ".join(str(o) for o in options) + ">"
    if note:
        line += f" [{note}]"
    return line
