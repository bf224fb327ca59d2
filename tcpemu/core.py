"""The sans-IO core: one emulated TCP endpoint, no sockets, no trio, no clock.

Segments go in with :meth:`ConnectionCore.receive` (the caller passes
``now``), segments to send come out of :meth:`ConnectionCore.send` and its
helpers, and received segments queue up as :class:`Message` objects that the
caller pulls.  Nothing here calls back.

States and their transitions are data: :class:`TcpState` carries the RFC 9293
names and ``TRANSITIONS`` is the one table of legal moves.  The emulated
endpoint never refuses to send what a test asks for; a send that has no
transition in the table leaves the state where it was.

Numbering follows the old tapi_tcp API with two corrections: AUTO ack is
:attr:`ConnectionCore.next_ackn` (everything received in order, FIN counted),
and out-of-order data is kept and reassembled.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Final

from ._checks import _check_port, check_rto
from ._errors import UsageError
from ._message import ConnectionStatistics, CoreEvent, Message, SegmentKind, _Counters
from ._options import (
    _OptionsMixin,
)
from ._receive_buffer import _OutOfOrder, _ReceiveBufferMixin
from ._retransmit import _RetransmitMixin
from ._send import _SYN_FIN_RST, _SendMixin
from ._state import (
    AUTO,
    CLIENT,
    DEFAULT_MSS,
    DEFAULT_WINDOW,
    QUIET,
    SEQ_MOD,
    SERVER,
    TRANSITIONS,
    Auto,
    Mode,
    Quiet,
    StateEvent,
    TcpState,
    seq_add,
    seq_diff,
)
from .wire import ACK_BIT as _F_ACK
from .wire import FIN_BIT as _F_FIN
from .wire import FLAGS, Segment, TcpOption, check_uint
from .wire import RST_BIT as _F_RST
from .wire import SYN_BIT as _F_SYN

__all__ = [
    "TcpState",
    "StateEvent",
    "TRANSITIONS",
    "Mode",
    "SERVER",
    "CLIENT",
    "AUTO",
    "QUIET",
    "Auto",
    "Quiet",
    "SegmentKind",
    "Message",
    "CoreEvent",
    "ConnectionCore",
    "ConnectionStatistics",
    "seq_add",
    "seq_diff",
    "DEFAULT_WINDOW",
    "DEFAULT_MSS",
]

log = logging.getLogger("tcpemu.core")


class ConnectionCore(_SendMixin, _OptionsMixin, _RetransmitMixin, _ReceiveBufferMixin):
    """One emulated TCP endpoint.

    ``isn`` is the initial send sequence number (the caller draws it from an
    injected random source).  ``src_port``/``dst_port`` are the local and
    remote ports; in SERVER mode ``dst_port`` may be None until the SYN.
    """

    # Slots, not a __dict__: a dict of this many fields can't share its keys
    # and costs about 1.1 KiB more per connection; slot reads are also the
    # quicker on the per-segment path.  _setup assigns every one.
    __slots__ = (
        "_backoff", "_counters", "_dupack_due", "_now", "_ooo", "_queue", "_read_seq", "_rto_deadline",
        "_simopen_answered", "_stream", "_stream_len", "_ts_t0", "_unacked", "dst_port", "events", "fin_got",
        "fin_seq", "irs", "iss", "last_ackn_got", "last_ackn_sent", "last_event", "last_seqn_got",
        "last_seqn_sent", "last_tsecr_got", "last_tsecr_sent", "last_tsval_got", "last_tsval_sent",
        "last_win_got", "max_out_of_order", "max_queue", "max_stream", "mode", "mss", "peer_mss",
        "peer_sack_permitted", "peer_ts", "peer_wscale", "rcv_nxt", "reliable", "rst_got", "rto",
        "sack", "snd_nxt", "snd_una", "src_port", "state", "syn_ack_got", "syn_got", "syn_sent",
        "timestamps", "ts_enabled", "ts_recent", "ts_start", "window", "wscale",
    )  # fmt: skip

    def __init__(
        self,
        mode: Mode,
        *,
        src_port: int,
        dst_port: int | None,
        isn: int,
        window: int | None = None,
        mss: int | None = DEFAULT_MSS,
        max_queue: int = 4096,
        max_stream: int = 16 * 1024 * 1024,
        max_out_of_order: int = 4 * 1024 * 1024,
        reliable: bool = False,
        rto: float = 0.2,
        wscale: int | None = None,
        sack: bool = False,
        timestamps: bool | None = None,
        ts_start: int = 0,
    ) -> None:
        if not isinstance(mode, Mode):
            raise UsageError(f"mode must be tcpemu.SERVER or tcpemu.CLIENT, got {mode!r}")
        _check_port("local port", src_port)
        if dst_port is not None:
            _check_port("remote port", dst_port)
        elif mode is Mode.CLIENT:
            raise UsageError("CLIENT mode needs the remote port (remote=(ip, port))")
        check_uint("isn", isn, SEQ_MOD - 1)
        if wscale is not None:
            check_uint("wscale (RFC 7323)", wscale, 14)
        if window is not None:
            check_uint("window", window, 0xFFFF << (wscale or 0))
        if mss is not None:
            check_uint("mss", mss, 0xFFFF)
        for what, bound in (("max_queue", max_queue), ("max_stream", max_stream)):
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
                raise UsageError(f"{what} must be an int >= 1, got {bound!r}")
        check_uint("max_out_of_order", max_out_of_order, 1 << 62)
        check_rto(rto)
        check_uint("ts_start", ts_start, SEQ_MOD - 1)
        for what, flag in (("reliable", reliable), ("sack", sack)):
            if not isinstance(flag, bool):
                raise UsageError(f"{what} must be True or False, got {flag!r}")
        if timestamps is not None and not isinstance(timestamps, bool):
            raise UsageError(f"timestamps must be True, False or None, got {timestamps!r}")
        self._setup(
            mode,
            src_port,
            dst_port,
            isn,
            DEFAULT_WINDOW if window is None else window,
            mss,
            max_queue,
            max_stream,
            max_out_of_order,
            reliable,
            rto,
            wscale,
            sack,
            timestamps,
            ts_start,
        )

    def _setup(
        self,
        mode: Mode,
        src_port: int,
        dst_port: int | None,
        isn: int,
        window: int,
        mss: int | None,
        max_queue: int,
        max_stream: int,
        max_out_of_order: int,
        reliable: bool,
        rto: float,
        wscale: int | None,
        sack: bool,
        timestamps: bool | None,
        ts_start: int,
    ) -> None:
        """Every field, from arguments already checked (by __init__, or for
        :meth:`fork` by the prototype's)."""
        self.mode = mode
        self.src_port = src_port
        self.dst_port = dst_port
        self.window = window
        self.mss = mss
        self.max_queue = max_queue
        self.max_stream = max_stream
        self.max_out_of_order = max_out_of_order
        self.state = TcpState.CLOSED
        self.events: list[CoreEvent] = []
        """What happened since the caller last pulled (:meth:`pop_events`)."""
        self._apply(StateEvent.PASSIVE_OPEN if mode is Mode.SERVER else None)
        self.events.clear()  # being made is not news
        self._dupack_due = False
        self._simopen_answered = False

        # send side
        self.iss = isn
        self.snd_nxt = isn
        self.snd_una = isn
        self.last_seqn_sent: int | None = None
        self.last_ackn_sent: int | None = None
        self.fin_seq: int | None = None  # sequence number our FIN took
        self.syn_sent = False

        # receive side
        self.irs: int | None = None
        self.rcv_nxt: int | None = None
        self.last_seqn_got: int | None = None
        self.last_ackn_got: int | None = None
        self.last_win_got: int | None = None
        self.fin_got = False
        self.rst_got = False
        self.syn_got = False
        self.syn_ack_got = False  # the peer's SYN acknowledged ours
        self.peer_mss: int | None = None  # the MSS option of the peer's SYN

        self._queue: deque[Message] = deque()
        # in-order payload not yet read: the segments' own bytes objects, joined only when read,
        # so that taking a segment copies nothing (and a bulk read copies each byte once)
        self._stream: list[bytes] = []
        self._stream_len = 0
        self._read_seq: int | None = None  # sequence number of _stream[0]
        self._ooo = _OutOfOrder()
        self._counters = _Counters()
        self.last_event: StateEvent | None = None

        # reliable mode: what we sent with AUTO seq and the peer has not acked
        self.reliable = reliable
        self.rto = rto

        # options: what we offer on our SYN, and what the handshake agreed
        self.wscale = wscale
        self.sack = sack
        self.timestamps = timestamps
        self.peer_wscale: int | None = None  # the WS option of the peer's SYN
        self.peer_sack_permitted = False
        self.peer_ts = False  # the peer's SYN carried timestamps
        self.ts_enabled = False  # we send timestamps on every segment
        self.ts_start = ts_start
        self._ts_t0: float | None = None
        self.last_tsval_got: int | None = None
        self.last_tsecr_got: int | None = None
        self.last_tsval_sent: int | None = None
        self.last_tsecr_sent: int | None = None
        self.ts_recent: int | None = None  # the value we echo (RFC 7323 TS.Recent)
        # a deque costs ~600 bytes: only reliable connections get one
        self._unacked: deque[Segment] | tuple[()] = deque() if reliable else ()
        self._rto_deadline: float | None = None
        self._backoff = 1
        self._now = 0.0

    def fork(self, *, dst_port: int, isn: int) -> ConnectionCore:
        """A new core with this one's settings, for a listener's next connection.

        This core is the listener's prototype and must be as made (nothing
        received or sent).  The new one takes its settings without checking
        them again (:meth:`__init__` did, for the prototype), a quarter of
        the cost of a new core.  ``dst_port`` and ``isn`` come from the
        peer's SYN and the random source and are taken as they are: a SYN
        from port 0 makes a connection to port 0 (remote data, not misuse).
        """
        if self.syn_got or self.syn_sent or self._counters.segments_received or self._counters.segments_sent:
            raise UsageError("fork needs an unused core (as made): this one has received or sent")
        new = object.__new__(ConnectionCore)
        new._setup(
            self.mode,
            self.src_port,
            dst_port,
            isn,
            self.window,
            self.mss,
            self.max_queue,
            self.max_stream,
            self.max_out_of_order,
            self.reliable,
            self.rto,
            self.wscale,
            self.sack,
            self.timestamps,
            self.ts_start,
        )
        return new

    # ------------------------------------------------------------------ state

    def _apply(self, event: StateEvent | None) -> None:
        if event is None:
            return
        new = TRANSITIONS.get((self.state, event))
        if new is not None and new is not self.state:
            if log.isEnabledFor(logging.DEBUG):  # enum names are not free: only when logged
                log.debug("%s --%s--> %s", self.state.name, event.value, new.name)
            # _name_ is the plain attribute behind .name, at a fraction of its cost
            self.events.append(CoreEvent("state", f"state {self.state._name_} -> {new._name_}"))
            self.state = new
        self.last_event = event

    def pop_events(self) -> list[CoreEvent]:
        """The events since the last call, oldest first."""
        events, self.events = self.events, []
        return events

    def should_ack(self) -> bool:
        """Whether a receiver owes the peer an ACK now: new data or a FIN not yet
        acknowledged, or a retransmitted or out-of-order segment since our last
        ACK (a duplicate ACK then: the peer may have lost ours, RFC 9293 3.10.7.4)."""
        return self.rcv_nxt is not None and (self.rcv_nxt != self.last_ackn_sent or self._dupack_due)

    @property
    def opened(self) -> bool:
        """The handshake is over: ESTABLISHED, or a state only an open connection reaches."""
        return self.state is _ESTABLISHED or self.state in _AFTER_OPEN

    def handshake(self, now: float) -> tuple[Segment | None, bool]:
        """The handshake's next segment of ours, if one is due now, and whether the
        connection is open (after sending it).

        SERVER: the peer's SYN gets our SYN-ACK.  CLIENT in SYN-SENT: the
        peer's SYN-ACK (of our SYN) gets our ACK, and we are open.
        Simultaneous open (CLIENT, the peer's bare SYN crossed ours): a
        SYN|ACK on our ISN, once.  Nothing is due until the peer's segment
        is here: that is how a test holds the peer in SYN-SENT.
        """
        if self.opened:
            return None, True
        if self.mode is Mode.SERVER and self.syn_got and not self.syn_sent:
            return self.syn_ack(now), False
        if self.state is TcpState.SYN_SENT and self.syn_ack_got:
            return self.ack_now(now), True
        if self.state is TcpState.SYN_RECEIVED and self.mode is Mode.CLIENT and not self._simopen_answered:
            self._simopen_answered = True
            return self.send(seq=self.iss, flags=_F_SYN | _F_ACK, now=now), False
        return None, False

    @property
    def synchronized(self) -> bool:
        """Both ISNs are known (the handshake's SYNs were exchanged)."""
        return self.irs is not None and self.syn_sent

    # ------------------------------------------------------------ info (API)

    @property
    def first_seqn_got(self) -> int | None:
        return self.irs

    @property
    def first_seqn_sent(self) -> int | None:
        return self.iss if self.syn_sent else None

    @property
    def next_seqn(self) -> int:
        return self.snd_nxt

    @property
    def next_ackn(self) -> int | None:
        return self.rcv_nxt

    def statistics(self) -> ConnectionStatistics:
        c = self._counters
        return ConnectionStatistics(
            state=self.state,
            segments_received=c.segments_received,
            segments_sent=c.segments_sent,
            retransmits_seen=c.retransmits_seen,
            out_of_order_seen=c.out_of_order_seen,
            unexpected_seen=c.unexpected_seen,
            queued_messages=len(self._queue),
            queue_overflows=c.queue_overflows,
            stream_overflow_bytes=c.stream_overflow_bytes,
            rst_ignored=c.rst_ignored,
            retransmits_sent=c.retransmits_sent,
        )

    # ------------------------------------------------------------- receiving

    def receive(
        self, seg: Segment, now: float, *, predicted: bool = False, vlan: int | None = None
    ) -> Message:
        """Take one segment from the peer; returns the queued :class:`Message`.

        ``predicted=True``: the caller has just had :meth:`receive_predicted`
        turn this segment down, so it is not tried again.  ``vlan``: the
        802.1Q tag the frame carried, kept in the Message.
        """
        if self.dst_port is None:
            self.dst_port = seg.src_port
        fl = int(seg.flags)
        if not predicted and vlan is None:
            # the common case first; receive_predicted alone decides what it takes
            msg = self.receive_predicted(
                seg.seq, seg.ack, fl, seg.window, seg.urgent, seg.options, seg.payload, now
            )
            if msg is not None:
                return msg
        c = self._counters
        c.segments_received += 1
        self._now = now
        kind = self._classify_and_take(seg)
        if kind is _RETRANSMIT:
            c.retransmits_seen += 1
            self._dupack_due = True
        elif kind is _OUT_OF_ORDER:
            c.out_of_order_seen += 1
            self._dupack_due = True
        elif kind is _UNEXPECTED:
            c.unexpected_seen += 1
        msg = self._take_rest(
            kind, seg.seq, seg.ack, fl, seg.window, seg.urgent, seg.options, seg.payload, now, vlan
        )
        if fl & _F_RST:
            self._take_rst(seg)
        return msg

    def receive_predicted(
        self,
        seq: int,
        ack: int,
        flags: int,
        window: int,
        urgent: int,
        options: tuple[TcpOption, ...],
        payload: bytes,
        now: float,
    ) -> Message | None:
        """Header prediction: the common segment, in order and without SYN,
        FIN or RST, taken from its fields without a :class:`Segment`.

        What :meth:`receive` does for such a segment (it calls this); the
        pump calls it straight from the frame's header.  None when the
        segment is not the predicted kind: then use :meth:`receive`.
        """
        if flags & _SYN_FIN_RST or seq != self.rcv_nxt or self.dst_port is None:
            return None
        self._counters.segments_received += 1
        self._now = now
        if payload:
            self._take_data(payload, False)
            if self._ooo.pieces:
                self._drain_out_of_order()
        self.last_seqn_got = seq
        # _take_rest for an expected segment without SYN or a VLAN tag, written
        # out: every in-order segment comes this way, and a call with ten
        # arguments costs as much as the rest of it (a unit test holds the two equal)
        if flags & _F_ACK:
            self._take_ack(ack)
        if options:
            self._take_timestamps(options, _EXPECTED)
        if self.wscale is not None and self.snd_wscale:
            scaled = window << self.snd_wscale
            self.last_win_got = scaled
        else:
            scaled = None
            self.last_win_got = window
        if len(self._queue) >= self.max_queue:
            return self._take_rest(
                _EXPECTED, seq, ack, flags, window, urgent, options, payload, now, taken=True
            )
        msg = _new_tuple(
            Message,
            (
                seq, ack, FLAGS[flags], window, options, payload, _EXPECTED, now, urgent, scaled, self.irs,
                self.iss if self.syn_sent else None, None,
            ),
        )  # fmt: skip
        self._queue.append(msg)
        return msg

    def _take_rest(
        self,
        kind: SegmentKind,
        seq: int,
        ack: int,
        fl: int,
        window: int,
        urgent: int,
        options: tuple[TcpOption, ...],
        payload: bytes,
        now: float,
        vlan: int | None = None,
        taken: bool = False,
    ) -> Message:
        """Acknowledgment, timestamps and window of a classified segment; queue its message.

        ``taken``: :meth:`receive_predicted` has taken them already and only
        the message is left (a full queue)."""
        scaled = None
        if not taken:
            if fl & _F_ACK and kind is not _UNEXPECTED:
                self._take_ack(ack)
            if options:
                self._take_timestamps(options, kind)
        if self.wscale is not None and self.snd_wscale and not fl & _F_SYN:  # wscale first: no property call
            scaled = window << self.snd_wscale
        if not taken and (kind is not _UNEXPECTED or fl & _F_SYN):
            self.last_win_got = window if scaled is None else scaled
        flags = FLAGS[fl]  # the wire and the predictor keep 9 bits
        # tuple.__new__ as NamedTuple._make does, without the Python-level __new__: one per segment
        ack_base = self.iss if self.syn_sent else None
        msg = _new_tuple(
            Message,
            (seq, ack, flags, window, options, payload, kind, now, urgent, scaled, self.irs, ack_base, vlan),
        )
        if len(self._queue) >= self.max_queue:
            # Newest is dropped, as a bounded channel would refuse it; the
            # receive state above has moved all the same.
            c = self._counters
            c.queue_overflows += 1
            self.events.append(CoreEvent("queue-full", f"receive queue full: seq={seq} not queued"))
            if _worth_logging(c.queue_overflows):
                log.warning(
                    "port %d: receive queue full (%d messages), segment seq=%d dropped from the queue "
                    "(%d overflows so far); read with recv_msg/recv_data or raise max_queue",
                    self.src_port,
                    self.max_queue,
                    seq,
                    c.queue_overflows,
                )
        else:
            self._queue.append(msg)
        return msg

    def _classify_and_take(self, seg: Segment) -> SegmentKind:
        fl = int(seg.flags)
        if fl & _F_SYN:
            if self.irs is None:
                self.irs = seg.seq
                self.rcv_nxt = seq_add(seg.seq, 1)
                self._read_seq = self.rcv_nxt
                self.last_seqn_got = seg.seq
                self.syn_got = True
                self._take_syn_options(seg.options)
                if self.state is TcpState.SYN_SENT and not fl & _F_ACK:
                    self._apply(StateEvent.RECV_SYN)
                elif self.state is TcpState.SYN_SENT:
                    self.last_event = StateEvent.RECV_SYN_ACK
                else:
                    self.last_event = StateEvent.RECV_SYN
                self._take_in_order(seg.payload, bool(fl & _F_FIN))
                return _EXPECTED
            if seg.seq == self.irs:
                return _RETRANSMIT
            return _UNEXPECTED
        if self.rcv_nxt is None:
            return _UNEXPECTED
        d = seq_diff(seg.seq, self.rcv_nxt)
        seq_len = seg.seq_len
        if d == 0:
            if seq_len:
                self._take_in_order(seg.payload, bool(fl & _F_FIN))
            self.last_seqn_got = seg.seq
            return _EXPECTED
        if d > 0:
            if seq_len:
                self._store_out_of_order(seg)
            return _OUT_OF_ORDER
        if d + seq_len > 0:
            # Starts with bytes we have, ends with new ones: take the new part.
            self._take_in_order(seg.payload[-d:], bool(fl & _F_FIN))
        return _RETRANSMIT

    def _take_in_order(self, payload: bytes, fin: bool) -> None:
        self._take_data(payload, fin)
        self._drain_out_of_order()

    def _take_data(self, payload: bytes, fin: bool) -> None:
        assert self.rcv_nxt is not None
        if payload:
            room = self.max_stream - self._stream_len
            if len(payload) > room:
                # The sequence space moves on; only the unread copy is bounded.
                self._counters.stream_overflow_bytes += len(payload) - room
                log.warning(
                    "port %d: %d received bytes not kept, unread stream at its bound of %d bytes",
                    self.src_port,
                    len(payload) - room,
                    self.max_stream,
                )
                if room > 0:
                    self._stream.append(payload[:room])
                    self._stream_len += room
            else:
                self._stream.append(payload)
                self._stream_len += len(payload)
            self.rcv_nxt = seq_add(self.rcv_nxt, len(payload))
        if fin:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self.fin_got = True
            self._apply(StateEvent.RECV_FIN)

    def _take_ack(self, ack: int) -> None:
        self.last_ackn_got = ack
        if not self.syn_sent:
            return
        if ack != self.snd_una and seq_diff(ack, self.snd_una) > 0 and seq_diff(ack, self.snd_nxt) <= 0:
            self.snd_una = ack
            if self._unacked:
                self._acked_up_to(ack)
        if self.state is _ESTABLISHED:
            return
        acceptable = seq_diff(ack, self.iss) > 0 and seq_diff(ack, self.snd_nxt) <= 0
        if self.state is TcpState.SYN_RECEIVED and acceptable:
            self._apply(StateEvent.RECV_ACK_OF_SYN)
        if self.state is TcpState.SYN_SENT and ack == seq_add(self.iss, 1):
            self.syn_ack_got = True
        if (
            self.fin_seq is not None
            and seq_diff(ack, self.fin_seq) > 0
            and self.state in (TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK)
        ):
            self._apply(StateEvent.RECV_ACK_OF_FIN)

    def _take_rst(self, seg: Segment) -> None:
        # RFC 9293 3.10.7: in SYN-SENT a RST is acceptable if it acks our SYN;
        # elsewhere if its seq is in the receive window.
        if self.state is TcpState.SYN_SENT:
            ok = bool(int(seg.flags) & _F_ACK) and seg.ack == self.snd_nxt
            why = f"in SYN-SENT a RST must ACK our SYN (ack {self.snd_nxt})"
        elif self.rcv_nxt is None:
            ok = self.state is not TcpState.LISTEN
            why = "in LISTEN a RST is ignored"
        else:
            d = seq_diff(seg.seq, self.rcv_nxt)
            ok = 0 <= d < max(self.window, 1)
            why = f"seq outside the receive window {self.rcv_nxt}+{max(self.window, 1)}"
        if ok:
            self.rst_got = True
            self.events.append(CoreEvent("rst-accepted", f"RST seq={seg.seq} accepted"))
            self._apply(StateEvent.RECV_RST)
        else:
            self._counters.rst_ignored += 1
            self.events.append(CoreEvent("rst-ignored", f"RST seq={seg.seq} ignored: {why}"))
            log.debug("port %d: RST seq=%d ignored: %s", self.src_port, seg.seq, why)

    def set_window(self, window: int) -> None:
        """The window we advertise from now on, in bytes (scaled on the wire once agreed)."""
        check_uint("window", window, 0xFFFF << (self.wscale or 0))
        self.window = window


_new_tuple: Final = tuple.__new__
# Module globals for the members the per-segment path tests: a global costs a
# tenth of looking a member up on its enum class.
_ESTABLISHED: Final = TcpState.ESTABLISHED
_AFTER_OPEN: Final = frozenset(
    {
        TcpState.FIN_WAIT_1,
        TcpState.FIN_WAIT_2,
        TcpState.CLOSE_WAIT,
        TcpState.CLOSING,
        TcpState.LAST_ACK,
        TcpState.TIME_WAIT,
    }
)
_EXPECTED: Final = SegmentKind.EXPECTED
_UNEXPECTED: Final = SegmentKind.UNEXPECTED
_RETRANSMIT: Final = SegmentKind.RETRANSMIT
_OUT_OF_ORDER: Final = SegmentKind.OUT_OF_ORDER


def _worth_logging(count: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th ... occurrence: every overflow is counted, the log is not flooded."""
    return count & (count - 1) == 0
