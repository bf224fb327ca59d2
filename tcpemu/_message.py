"""What the core hands its caller: received segments as messages, its events and counters."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from ._state import TcpState
from ._trace import format_segment
from .wire import OptionKind, TcpFlags, TcpOption, find_option

__all__ = ["SegmentKind", "Message", "CoreEvent", "ConnectionStatistics"]


class SegmentKind(enum.Enum):
    """How a received segment relates to what was received before."""

    EXPECTED = "expected"
    """Starts at next_ackn (or is the peer's first SYN): it moved the receive state."""
    RETRANSMIT = "retransmit"
    """Starts before next_ackn: its sequence number was seen already."""
    OUT_OF_ORDER = "out-of-order"
    """Starts after next_ackn: a gap lies before it; its data is kept for reassembly."""
    UNEXPECTED = "unexpected"
    """No SYN from the peer seen yet, or a SYN with another ISN."""


class Message(NamedTuple):
    """One segment received from the peer, as the test sees it (immutable)."""

    seq: int
    ack: int
    flags: TcpFlags
    window: int
    """The window field as on the wire."""
    options: tuple[TcpOption, ...]
    payload: bytes
    kind: SegmentKind
    time: float
    urgent: int = 0
    scaled_window: int | None = None
    """The window in bytes, the peer's window scale applied (None: the same as ``window``)."""
    seq_base: int | None = None
    """The peer's ISN when this arrived (None: not known yet): ``rel_seq`` counts from it."""
    ack_base: int | None = None
    """Our ISN once our SYN was sent (None before): ``rel_ack`` counts from it."""
    vlan: int | None = None
    """The 802.1Q VLAN ID the frame carried (None: untagged)."""

    @property
    def window_bytes(self) -> int:
        return self.window if self.scaled_window is None else self.scaled_window

    def __str__(self) -> str:
        """The segment in packetdrill's notation, numbers relative to the ISNs it counts from:
        ``P. 1:1001(1000) ack 1 win 502 <nop,nop,TS val 7 ecr 3>``."""
        return format_segment(
            self.flags,
            self.seq,
            self.ack,
            self.window,
            self.options,
            len(self.payload),
            urgent=self.urgent,
            seq_base=self.seq_base,
            ack_base=self.ack_base,
        )

    @property
    def rel_seq(self) -> int:
        """seq relative to the peer's ISN, as the trace and packetdrill write it (absolute
        while the ISN is unknown)."""
        return self.seq if self.seq_base is None else (self.seq - self.seq_base) % (1 << 32)

    @property
    def rel_ack(self) -> int:
        """ack relative to our ISN (absolute before our SYN was sent)."""
        return self.ack if self.ack_base is None else (self.ack - self.ack_base) % (1 << 32)

    @property
    def retransmit(self) -> bool:
        return self.kind is SegmentKind.RETRANSMIT

    @property
    def seq_len(self) -> int:
        f = int(self.flags)
        return len(self.payload) + ((f >> 1) & 1) + (f & 1)

    @property
    def mss(self) -> int | None:
        return self._option_value(OptionKind.MSS)  # type: ignore[return-value]

    @property
    def timestamps(self) -> tuple[int, int] | None:
        return self._option_value(OptionKind.TIMESTAMP)  # type: ignore[return-value]

    @property
    def sack_blocks(self) -> list[tuple[int, int]]:
        value = self._option_value(OptionKind.SACK)
        return value if isinstance(value, list) else []

    def option(self, kind: int) -> TcpOption | None:
        """The first option of ``kind``, or None."""
        return find_option(self.options, kind)

    def _option_value(self, kind: int) -> object | None:
        opt = self.option(kind)
        return None if opt is None else opt.value()


class CoreEvent(NamedTuple):
    """Something the core did that a caller may want to say (trace, log): pulled
    with :meth:`ConnectionCore.pop_events`, never called back."""

    kind: str
    """"state", "rst-accepted", "rst-ignored", "queue-full" or "retransmit"."""
    text: str


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    """Counters of one emulated connection."""

    state: TcpState
    segments_received: int
    segments_sent: int
    retransmits_seen: int
    out_of_order_seen: int
    unexpected_seen: int
    queued_messages: int
    queue_overflows: int
    stream_overflow_bytes: int
    rst_ignored: int
    retransmits_sent: int
    """Segments the reliable mode sent again after its retransmission timeout."""


@dataclass(slots=True)
class _Counters:
    segments_received: int = 0
    segments_sent: int = 0
    retransmits_seen: int = 0
    out_of_order_seen: int = 0
    unexpected_seen: int = 0
    queue_overflows: int = 0
    stream_overflow_bytes: int = 0
    rst_ignored: int = 0
    retransmits_sent: int = 0
