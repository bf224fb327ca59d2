"""The sending side of a core: segments made with AUTO/explicit/QUIET numbering, and
recorded (what was sent moves the state, as the table says).

A mixin of :class:`~tcpemu.core.ConnectionCore` (its fields live in the core's slots).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final

from ._checks import _check_options, _check_seq, _check_time
from ._errors import UsageError
from ._message import Message
from ._state import AUTO, QUIET, Auto, Quiet, StateEvent, TcpState, seq_add, seq_diff
from .wire import ACK_BIT as _F_ACK
from .wire import FIN_BIT as _F_FIN
from .wire import FLAGS, Segment, TcpFlags, TcpOption, check_uint
from .wire import PSH_BIT as _F_PSH
from .wire import RST_BIT as _F_RST
from .wire import SYN_BIT as _F_SYN

if TYPE_CHECKING:
    from .core import ConnectionCore

_SYN_FIN_RST: Final = _F_SYN | _F_FIN | _F_RST


class _SendMixin:
    __slots__ = ()

    def send(
        self: ConnectionCore,
        payload: bytes = b"",
        *,
        seq: int | Auto | Quiet = AUTO,
        ack: int | Auto | Quiet = AUTO,
        flags: TcpFlags | int | None = None,
        window: int | None = None,
        options: tuple[TcpOption, ...] | list[TcpOption] | None = None,
        urgent: int = 0,
        now: float,
    ) -> Segment:
        """Make the next segment to send and record it, at time ``now`` (seconds,
        the caller's clock: it sets the TSval and, in reliable mode, the
        retransmission deadline).

        In reliable mode, a segment sent with AUTO seq that takes sequence
        space is kept until acknowledged and sent again on timeout (see
        :meth:`handle_timer`).

        seq: AUTO takes next_seqn and advances it by the segment's length;
        an int is used as is and advances nothing (see :meth:`update_sent_seq`);
        QUIET puts 0.  ack: AUTO puts next_ackn (and sets ACK when flags is
        None and the peer's SYN is known); QUIET puts 0 and clears ACK.
        flags=None means ACK (when there is something to acknowledge) plus
        PSH when there is payload.
        """
        if self.dst_port is None:
            raise UsageError("cannot send: the remote port is not known yet (no SYN from the peer)")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise UsageError(f"payload must be bytes, got {type(payload).__name__}")
        _check_time(now)
        payload = bytes(payload)
        if isinstance(ack, Auto):
            ack_value = self.rcv_nxt
        elif isinstance(ack, Quiet):
            ack_value = None
        else:
            _check_seq("ack", ack)
            ack_value = ack
        if flags is None:
            fi = (_F_ACK if ack_value is not None else 0) | (_F_PSH if payload else 0)
        else:
            if not isinstance(flags, int) or isinstance(flags, bool):
                raise UsageError(f"flags must be TcpFlags or an int, got {flags!r}")
            fi = int(flags)
            if not 0 <= fi <= 0x1FF:
                # what is recorded is what is sent: the reserved bits above AE are for
                # deliberately odd segments, conn.segment(flags=...) + send_segments
                raise UsageError(
                    f"flags must be 0..0x1FF (FIN..AE), got {fi:#x}; set reserved bits with "
                    "conn.segment(flags=...) and send_segments"
                )
        if isinstance(ack, Quiet):
            fi &= ~_F_ACK
        if isinstance(seq, Auto):
            seq_value = self.snd_nxt
        elif isinstance(seq, Quiet):
            seq_value = 0
        else:
            _check_seq("seq", seq)
            seq_value = seq
        if options is None:
            opts = self._syn_options(now) if fi & _F_SYN else self._options(now, fi)
        else:
            opts = _check_options(options)
        check_uint("urgent", urgent, 0xFFFF)
        if window is not None:
            check_uint("window", window, 0xFFFF)
        win = self.window if window is None else window
        if window is None:
            if fi & _F_SYN:
                win = min(win, 0xFFFF)  # a SYN's window is never scaled (RFC 7323 2.2)
            elif self.rcv_wscale:
                win >>= self.rcv_wscale  # our window in bytes, scaled for the wire
        if not 0 <= win <= 0xFFFF:
            raise UsageError(f"window must be 0..65535 on the wire, got {win}")
        seg = Segment(
            src_port=self.src_port,
            dst_port=self.dst_port,
            seq=seq_value,
            ack=ack_value or 0,
            flags=FLAGS[fi],
            window=win,
            urgent=urgent,
            options=opts,
            payload=payload,
        )
        advance = isinstance(seq, Auto)
        self._record_sent(seg, advance=advance)
        if self.reliable and advance and seg.seq_len:
            if not isinstance(self._unacked, deque):
                self._unacked = deque()  # reliable switched on after creation
            self._unacked.append(seg)
            if self._rto_deadline is None:
                self._rto_deadline = now + self.rto * self._backoff
        return seg

    def is_probe(self: ConnectionCore, msg: Message) -> bool:
        """A keepalive or zero-window probe: at most one byte at next_ackn - 1, no SYN/FIN/RST
        (Linux sends a pure ACK one below snd_una); it is counted as a retransmit."""
        return (
            self.rcv_nxt is not None
            and len(msg.payload) <= 1
            and not int(msg.flags) & _SYN_FIN_RST
            and msg.seq == seq_add(self.rcv_nxt, -1)
        )

    def window_probe(self: ConnectionCore, now: float) -> Segment:
        """A zero-window probe of ours: a pure ACK one below next_seqn, as Linux sends it
        (the peer answers with an ACK that carries its window)."""
        return self.send(seq=seq_add(self.snd_nxt, -1), flags=_F_ACK, now=now)

    def unacked_bytes(self: ConnectionCore) -> int:
        """Sequence space sent and not yet acknowledged."""
        return seq_diff(self.snd_nxt, self.snd_una)

    def record_sent(self: ConnectionCore, seg: Segment) -> None:
        """Record a segment the caller built itself and sent (numbering does not move;
        state moves for its flags, as for any segment sent)."""
        self._record_sent(seg, advance=False)

    def _record_sent(self: ConnectionCore, seg: Segment, *, advance: bool) -> None:
        self._counters.segments_sent += 1
        f = int(seg.flags)
        self.last_seqn_sent = seg.seq
        if f & _F_ACK:
            self.last_ackn_sent = seg.ack
            self._dupack_due = False
        if f & _F_SYN:
            self.syn_sent = True
        if advance:
            if f & _F_FIN and self.fin_seq is None:
                self.fin_seq = seq_add(seg.seq, seg.seq_len - 1)
            self.snd_nxt = seq_add(self.snd_nxt, seg.seq_len)
        # State moves for what was sent, whatever numbering the test chose.
        if f & _F_RST:
            self._apply(StateEvent.SEND_RST)
        elif f & _F_SYN and f & _F_ACK:
            self._apply(StateEvent.SEND_SYN_ACK)
        elif f & _F_SYN:
            self._apply(StateEvent.SEND_SYN)
        else:
            if self.state is TcpState.SYN_SENT and f & _F_ACK and self.irs is not None and self.syn_ack_got:
                self._apply(StateEvent.SEND_ACK_OF_SYN)
            if f & _F_FIN:
                self._apply(StateEvent.SEND_FIN)

    def update_sent_seq(self: ConnectionCore, new_bytes: int) -> None:
        """Advance next_seqn by ``new_bytes``, for data sent with an explicit seq."""
        if new_bytes < 0:
            raise UsageError(f"update_sent_seq takes a byte count >= 0, got {new_bytes}")
        self.snd_nxt = seq_add(self.snd_nxt, new_bytes)

    def syn(self: ConnectionCore, now: float) -> Segment:
        """CLIENT: the SYN that opens the connection."""
        if self.syn_sent:
            raise UsageError(f"SYN already sent (state {self.state.name})")
        return self.send(flags=_F_SYN, ack=QUIET, now=now)

    def syn_ack(self: ConnectionCore, now: float) -> Segment:
        """SERVER: the SYN-ACK answering the peer's SYN."""
        if not self.syn_got:
            raise UsageError(f"no SYN from the peer to answer (state {self.state.name})")
        if self.syn_sent:
            raise UsageError(f"SYN-ACK already sent (state {self.state.name})")
        return self.send(flags=_F_SYN | _F_ACK, now=now)

    def ack_now(
        self: ConnectionCore, now: float, ackn: int | None = None, *, window: int | None = None
    ) -> Segment:
        """A pure ACK of next_ackn (or of ``ackn``), seq = next_seqn (``window``: the raw
        window field instead of the connection's)."""
        if self.rcv_nxt is None and ackn is None:
            raise UsageError("nothing to acknowledge: no SYN from the peer yet")
        return self.send(
            seq=self.snd_nxt,
            ack=AUTO if ackn is None else ackn,
            flags=_F_ACK,
            window=window,
            now=now,
        )

    def fin(self: ConnectionCore, now: float) -> Segment:
        """FIN|ACK at next_seqn."""
        if not self.synchronized:
            raise UsageError(f"cannot send FIN before the handshake (state {self.state.name})")
        return self.send(flags=_F_FIN | _F_ACK, now=now)

    def rst(self: ConnectionCore, now: float, *, ack: bool = True) -> Segment:
        """RST|ACK at next_seqn (``ack=False``, or nothing received yet: a bare RST, ack 0)."""
        with_ack = ack and self.rcv_nxt is not None
        return self.send(
            flags=_F_RST | (_F_ACK if with_ack else 0),
            seq=self.snd_nxt,
            ack=AUTO if with_ack else QUIET,
            now=now,
        )

    @property
    def fin_acked(self: ConnectionCore) -> bool:
        return (
            self.fin_seq is not None
            and self.last_ackn_got is not None
            and (seq_diff(self.snd_una, self.fin_seq) > 0)
        )
