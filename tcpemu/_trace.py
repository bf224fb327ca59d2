"""One readable line per segment, as tcpdump and packetdrill users read them."""

from __future__ import annotations

from .core import seq_diff
from .wire import Segment, TcpFlags


def _rel(value: int, base: int | None) -> int:
    return value if base is None else seq_diff(value, base) % (1 << 32)


def format_segment(
    seg: Segment,
    *,
    time: float,
    outgoing: bool,
    seq_base: int | None,
    ack_base: int | None,
    label: str = "",
    note: str = "",
) -> str:
    """``0.000123 conn > S. 0:0(0) ack 1 win 65535 <mss 1460>``.

    seq is relative to the sender's ISN, ack to the receiver's (when known).
    """
    n = len(seg.payload)
    s = _rel(seg.seq, seq_base)
    line = f"{time:10.6f} {label}{'>' if outgoing else '<'} {seg.flags.short():<3} {s}:{s + n}({n})"
    if seg.flags & TcpFlags.ACK:
        line += f" ack {_rel(seg.ack, ack_base)}"
    line += f" win {seg.window}"
    if seg.options:
        line += " <" + ", ".join(str(o) for o in seg.options) + ">"
    if note:
        line += f" [{note}]"
    return line
