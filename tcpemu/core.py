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

import enum
import functools
import logging
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Final, NamedTuple

from ._errors import UsageError, WouldBlock
from .wire import FLAGS, OptionKind, Segment, TcpFlags, TcpOption, find_option

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

SEQ_MOD: Final = 1 << 32
DEFAULT_WINDOW: Final = 65535
DEFAULT_MSS: Final = 1460


def seq_add(a: int, b: int) -> int:
    return (a + b) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed 32-bit number."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= 1 << 31 else d


class TcpState(enum.Enum):
    """The eleven TCP states, with RFC 9293 names (values are the RFC spelling)."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hash them so too.  Enum's
    # own __hash__ is Python code, and TRANSITIONS is looked up by (state,
    # event) for most segments.
    __hash__ = object.__hash__

    @classmethod
    def from_linux(cls, tcpi_state: int) -> TcpState:
        """Map Linux ``tcpi_state`` (include/net/tcp_states.h) to the RFC state."""
        try:
            return _LINUX_STATES[tcpi_state]
        except KeyError:
            raise UsageError(f"unknown Linux TCP state number {tcpi_state}") from None

    @classmethod
    def parse(cls, name: str) -> TcpState:
        """Accept RFC ("FIN-WAIT-1"), enum ("FIN_WAIT_1") and Linux ("FIN_WAIT1", "SYN_RECV") spellings."""
        key = name.strip().upper().replace("-", "_")
        key = _ALIASES.get(key, key)
        try:
            return cls[key]
        except KeyError:
            raise UsageError(
                f"unknown TCP state {name!r}; expected one of {', '.join(s.name for s in cls)}"
            ) from None


_LINUX_STATES: Final = {
    1: TcpState.ESTABLISHED,
    2: TcpState.SYN_SENT,
    3: TcpState.SYN_RECEIVED,
    4: TcpState.FIN_WAIT_1,
    5: TcpState.FIN_WAIT_2,
    6: TcpState.TIME_WAIT,
    7: TcpState.CLOSED,
    8: TcpState.CLOSE_WAIT,
    9: TcpState.LAST_ACK,
    10: TcpState.LISTEN,
    11: TcpState.CLOSING,
    12: TcpState.SYN_RECEIVED,  # TCP_NEW_SYN_RECV: a request sock, SYN-RECEIVED on the wire
}
_ALIASES: Final = {
    "SYN_RECV": "SYN_RECEIVED",
    "FIN_WAIT1": "FIN_WAIT_1",
    "FIN_WAIT2": "FIN_WAIT_2",
    "CLOSE": "CLOSED",
}


class StateEvent(enum.Enum):
    """What moves the emulated endpoint between states."""

    PASSIVE_OPEN = "passive open"
    SEND_SYN = "send SYN"
    RECV_SYN = "receive SYN"
    SEND_SYN_ACK = "send SYN-ACK"
    RECV_SYN_ACK = "receive SYN-ACK"
    SEND_ACK_OF_SYN = "send ACK of SYN"
    RECV_ACK_OF_SYN = "receive ACK of SYN"
    SEND_FIN = "send FIN"
    RECV_FIN = "receive FIN"
    RECV_ACK_OF_FIN = "receive ACK of FIN"
    SEND_RST = "send RST"
    RECV_RST = "receive RST"
    TIME_WAIT_DONE = "2MSL timeout"

    __hash__ = object.__hash__  # as TcpState's


S, E = TcpState, StateEvent
TRANSITIONS: Final[dict[tuple[TcpState, StateEvent], TcpState]] = {
    (S.CLOSED, E.PASSIVE_OPEN): S.LISTEN,
    (S.CLOSED, E.SEND_SYN): S.SYN_SENT,
    (S.LISTEN, E.SEND_SYN): S.SYN_SENT,
    # The emulator answers a SYN only when the test asks (wait_open), so a
    # received SYN is recorded and the move happens with the SYN-ACK sent.
    (S.LISTEN, E.SEND_SYN_ACK): S.SYN_RECEIVED,
    (S.SYN_SENT, E.RECV_SYN): S.SYN_RECEIVED,  # simultaneous open
    (S.SYN_SENT, E.SEND_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, E.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECV_FIN): S.CLOSING,
    (S.FIN_WAIT_2, E.RECV_FIN): S.TIME_WAIT,
    (S.CLOSING, E.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.CLOSE_WAIT, E.SEND_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, E.TIME_WAIT_DONE): S.CLOSED,
}
# A reset, sent or accepted, ends every state but CLOSED and LISTEN's wait.
for _state in TcpState:
    if _state is not S.CLOSED:
        TRANSITIONS[(_state, E.SEND_RST)] = S.CLOSED
        TRANSITIONS[(_state, E.RECV_RST)] = S.CLOSED
del S, E, _state


class Mode(enum.Enum):
    """SERVER sends nothing until the peer's SYN is answered; CLIENT sends the SYN."""

    SERVER = "server"
    CLIENT = "client"


SERVER: Final = Mode.SERVER
CLIENT: Final = Mode.CLIENT


class Auto(enum.Enum):
    AUTO = "AUTO"

    def __repr__(self) -> str:
        return "tcpemu.AUTO"


class Quiet(enum.Enum):
    QUIET = "QUIET"

    def __repr__(self) -> str:
        return "tcpemu.QUIET"


AUTO: Final = Auto.AUTO
"""seq/ack filled from the connection's state (seq advances the send state)."""
QUIET: Final = Quiet.QUIET
"""seq/ack left unfilled: the field is 0 (and for ack, the ACK flag is off)."""


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

    @property
    def window_bytes(self) -> int:
        return self.window if self.scaled_window is None else self.scaled_window

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


@dataclass(slots=True)
class _OutOfOrder:
    """Out-of-order data kept until the gap before it fills: seq -> (payload, fin)."""

    pieces: dict[int, tuple[bytes, bool]] = field(default_factory=dict)
    size: int = 0


class ConnectionCore:
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
        "_stream", "_ts_t0", "_unacked", "dst_port", "events", "fin_got", "fin_seq", "irs", "iss",
        "last_ackn_got",
        "last_ackn_sent", "last_event", "last_seqn_got", "last_seqn_sent", "last_tsecr_got",
        "last_tsecr_sent", "last_tsval_got", "last_tsval_sent", "last_win_got", "max_out_of_order",
        "max_queue", "max_stream", "mode", "mss", "peer_mss", "peer_sack_permitted", "peer_ts",
        "peer_wscale", "rcv_nxt", "reliable", "rst_got", "rto", "sack", "snd_nxt", "snd_una", "src_port",
        "state", "syn_ack_got", "syn_got", "syn_sent", "timestamps", "ts_enabled", "ts_recent",
        "ts_start", "window", "wscale",
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
        _check_uint("isn", isn, SEQ_MOD - 1)
        if wscale is not None:
            _check_uint("wscale (RFC 7323)", wscale, 14)
        if window is not None:
            _check_uint("window", window, 0xFFFF << (wscale or 0))
        if mss is not None:
            _check_uint("mss", mss, 0xFFFF)
        for what, bound in (("max_queue", max_queue), ("max_stream", max_stream)):
            if not isinstance(bound, int) or isinstance(bound, bool) or bound < 1:
                raise UsageError(f"{what} must be an int >= 1, got {bound!r}")
        _check_uint("max_out_of_order", max_out_of_order, 1 << 62)
        check_rto(rto)
        _check_uint("ts_start", ts_start, SEQ_MOD - 1)
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
        self._stream = bytearray()  # in-order payload not yet read
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

    def receive(self, seg: Segment, now: float) -> Message:
        """Take one segment from the peer; returns the queued :class:`Message`."""
        if self.dst_port is None:
            self.dst_port = seg.src_port
        fl = int(seg.flags)
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
            kind, seg.seq, seg.ack, fl, seg.window, seg.urgent, seg.options, seg.payload, now
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
        return self._take_rest(_EXPECTED, seq, ack, flags, window, urgent, options, payload, now)

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
    ) -> Message:
        """Acknowledgment, timestamps and window of a classified segment; queue its message."""
        if fl & _F_ACK and kind is not _UNEXPECTED:
            self._take_ack(ack)
        scaled = None
        if options:
            self._take_timestamps(options, kind)
        if self.wscale is not None and self.snd_wscale and not fl & _F_SYN:  # wscale first: no property call
            scaled = window << self.snd_wscale
        if kind is not _UNEXPECTED or fl & _F_SYN:
            self.last_win_got = window if scaled is None else scaled
        flags = FLAGS[fl]  # the wire and the predictor keep 9 bits
        # tuple.__new__ as NamedTuple._make does, without the Python-level __new__: one per segment
        msg = _new_tuple(Message, (seq, ack, flags, window, options, payload, kind, now, urgent, scaled))
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
            room = self.max_stream - len(self._stream)
            if len(payload) > room:
                # The sequence space moves on; only the unread copy is bounded.
                self._counters.stream_overflow_bytes += len(payload) - room
                log.warning(
                    "port %d: %d received bytes not kept, unread stream at its bound of %d bytes",
                    self.src_port,
                    len(payload) - room,
                    self.max_stream,
                )
                self._stream += payload[:room]
            else:
                self._stream += payload
            self.rcv_nxt = seq_add(self.rcv_nxt, len(payload))
        if fin:
            self.rcv_nxt = seq_add(self.rcv_nxt, 1)
            self.fin_got = True
            self._apply(StateEvent.RECV_FIN)

    def _store_out_of_order(self, seg: Segment) -> None:
        ooo = self._ooo
        old = ooo.pieces.get(seg.seq)
        grow = len(seg.payload) - (len(old[0]) if old else 0)
        if grow <= 0 and not (int(seg.flags) & _F_FIN and old and not old[1]):
            return
        if ooo.size + max(grow, 0) > self.max_out_of_order:
            self._counters.stream_overflow_bytes += len(seg.payload)
            log.warning("port %d: out-of-order store full, seq=%d not kept", self.src_port, seg.seq)
            return
        ooo.size += max(grow, 0)
        ooo.pieces[seg.seq] = (seg.payload, bool(int(seg.flags) & _F_FIN))

    def _drain_out_of_order(self) -> None:
        """Move stored pieces that now touch next_ackn into the stream."""
        ooo = self._ooo
        progressed = True
        while progressed and ooo.pieces and self.rcv_nxt is not None and not self.fin_got:
            progressed = False
            for seq in list(ooo.pieces):
                payload, fin = ooo.pieces[seq]
                d = seq_diff(seq, self.rcv_nxt)
                if d > 0:
                    continue
                del ooo.pieces[seq]
                ooo.size -= len(payload)
                if d + len(payload) + fin > 0:
                    # the first -d bytes overlap what is already in order
                    self._take_data(payload[-d:], fin)
                    progressed = True
                    if self.fin_got:
                        break

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

    # ------------------------------------------------------------- the queue

    def pending(self) -> int:
        return len(self._queue)

    def peek_message(self, *, skip_retransmits: bool = False) -> Message | None:
        for msg in self._queue:
            if not (skip_retransmits and msg.kind is _RETRANSMIT):
                return msg
        return None

    def peek_expected(self) -> Message | None:
        for msg in self._queue:
            if msg.kind is _EXPECTED:
                return msg
        return None

    def discard_handshake(self) -> int:
        """Drop queued SYNs and pure ACKs: what the handshake consumed.  Returns how many."""
        keep = deque(
            m
            for m in self._queue
            if not (int(m.flags) & _F_SYN or (not m.payload and int(m.flags) & _HANDSHAKE_ONLY == _F_ACK))
        )
        dropped = len(self._queue) - len(keep)
        self._queue = keep
        return dropped

    def pop_message_nowait(self, *, skip_retransmits: bool = False) -> Message:
        """The oldest queued message (retransmits dropped first if asked); WouldBlock if none."""
        q = self._queue
        while q:
            msg = q.popleft()
            if skip_retransmits and msg.kind is _RETRANSMIT:
                continue
            self._consume(msg)
            return msg
        raise WouldBlock("no message queued")

    def _consume(self, msg: Message) -> None:
        """A message read by itself also reads its in-order bytes from the stream."""
        if not msg.payload or self._read_seq is None:
            return
        d = seq_diff(msg.seq + (1 if int(msg.flags) & _F_SYN else 0), self._read_seq)
        end = d + len(msg.payload)
        if d <= 0 < end:
            n = min(end, len(self._stream))
            del self._stream[:n]
            self._read_seq = seq_add(self._read_seq, n)

    def unread(self, data: bytes) -> None:
        """Put ``data`` (just taken with :meth:`read_stream`) back at the front of the
        unread stream: a reader that was cancelled loses nothing."""
        if data:
            self._stream[:0] = data
            if self._read_seq is not None:
                self._read_seq = seq_add(self._read_seq, -len(data))

    def set_window(self, window: int) -> None:
        """The window we advertise from now on, in bytes (scaled on the wire once agreed)."""
        _check_uint("window", window, 0xFFFF << (self.wscale or 0))
        self.window = window

    def read_bytes(self, n: int) -> bytes:
        """The first ``n`` unread in-order bytes (fewer if fewer are there); queued
        messages stay (they are read with the stream only by :meth:`read_stream`)."""
        data = bytes(self._stream[:n])
        del self._stream[:n]
        if self._read_seq is not None:
            self._read_seq = seq_add(self._read_seq, len(data))
        return data

    def read_stream(self) -> bytes:
        """All in-order payload not read yet; the message queue is emptied with it."""
        data = bytes(self._stream)
        self._stream.clear()
        if self._read_seq is not None:
            self._read_seq = seq_add(self._read_seq, len(data))
        self._queue.clear()
        return data

    def stream_available(self) -> int:
        return len(self._stream)

    # --------------------------------------------------------------- sending

    def send(
        self,
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
        _check_uint("urgent", urgent, 0xFFFF)
        if window is not None:
            _check_uint("window", window, 0xFFFF)
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

    # ----------------------------------------------------------------- options

    @property
    def snd_wscale(self) -> int:
        """The shift applied to windows the peer sends (0 unless both SYNs had WS)."""
        if self.peer_wscale is None or self.wscale is None or not self._our_syn_offers_ws:
            return 0
        return min(self.peer_wscale, 14)

    @property
    def rcv_wscale(self) -> int:
        """The shift applied to windows we send (0 unless both SYNs had WS)."""
        if self.peer_wscale is None or self.wscale is None or not self._our_syn_offers_ws:
            return 0
        return self.wscale

    @property
    def sack_ok(self) -> bool:
        """Both SYNs carried SACK-permitted."""
        return self.sack and self.peer_sack_permitted and self.syn_sent

    @property
    def _our_syn_offers_ws(self) -> bool:
        return self.syn_sent

    def _take_syn_options(self, options: tuple[TcpOption, ...]) -> None:
        for opt in options:
            kind, data = opt.kind, opt.data
            if kind == _K_MSS and len(data) == 2:
                self.peer_mss = int.from_bytes(data, "big")
            elif kind == _K_WSCALE and len(data) == 1:
                self.peer_wscale = data[0]
            elif kind == _K_SACK_PERMITTED:
                self.peer_sack_permitted = True
            elif kind == _K_TIMESTAMP and len(data) == 8:
                self.peer_ts = True

    def _take_timestamps(self, options: tuple[TcpOption, ...], kind: SegmentKind) -> None:
        for opt_kind, data in options:  # unpacked: quicker than the NamedTuple's properties
            if opt_kind == _K_TIMESTAMP and len(data) == 8:
                tsval, tsecr = _TS.unpack(data)
                self.last_tsval_got, self.last_tsecr_got = tsval, tsecr
                # RFC 7323 4.3: TS.Recent follows segments that move the left edge
                if kind is _EXPECTED or self.ts_recent is None:
                    self.ts_recent = tsval
                return

    def _tsval(self, now: float) -> int:
        """ts_start + ms since the first timestamp, never lower than a TSval sent before:
        a clock read out of order (or a caller's older ``now``) must not make a
        PAWS-checking peer drop our segment (RFC 7323 5.3)."""
        if self._ts_t0 is None:
            self._ts_t0 = now
        tsval = (self.ts_start + int((now - self._ts_t0) * 1000)) % SEQ_MOD
        last = self.last_tsval_sent
        if last is not None and seq_diff(tsval, last) < 0:
            return last
        return tsval

    def _timestamp_option(self, now: float) -> TcpOption:
        tsval = self._tsval(now)
        tsecr = self.ts_recent or 0
        self.last_tsval_sent, self.last_tsecr_sent = tsval, tsecr
        return _new_tuple(TcpOption, (_K_TIMESTAMP, _TS.pack(tsval, tsecr)))

    def _syn_options(self, now: float) -> tuple[TcpOption, ...]:
        """MSS, SACK-permitted, timestamps, window scale, as Linux orders them."""
        opts: list[TcpOption] = []
        if self.mss is not None:
            opts.append(_mss_option(self.mss))
        answering = self.syn_got  # a SYN-ACK offers only what the peer offered
        if self.sack and (not answering or self.peer_sack_permitted):
            opts.append(TcpOption.sack_permitted())
        offer_ts = self.timestamps if self.timestamps is not None else answering and self.peer_ts
        if offer_ts and (not answering or self.peer_ts):
            opts.append(self._timestamp_option(now))
            self.ts_enabled = True
        if self.wscale is not None and (not answering or self.peer_wscale is not None):
            opts += [_NOP, TcpOption.wscale(self.wscale)]
        return tuple(opts)

    def _options(self, now: float, fi: int) -> tuple[TcpOption, ...]:
        if not (self.ts_enabled and self.peer_ts) and not self.sack_ok:
            return ()
        opts: list[TcpOption] = []
        if self.ts_enabled and self.peer_ts:
            opts += [_NOP, _NOP, self._timestamp_option(now)]
        if self.sack_ok and fi & _F_ACK and self._ooo.pieces:
            blocks = self.sack_blocks()[: 3 if self.ts_enabled else 4]
            opts += [_NOP, _NOP, TcpOption.sack(blocks)]
        return tuple(opts)

    def sack_blocks(self) -> list[tuple[int, int]]:
        """The out-of-order data held, as (left, right) edges, newest first (RFC 2018)."""
        if self.rcv_nxt is None:
            return []
        ranges = sorted(
            (seq_diff(seq, self.rcv_nxt), seq_diff(seq, self.rcv_nxt) + len(p) + fin)
            for seq, (p, fin) in self._ooo.pieces.items()
        )
        merged: list[list[int]] = []
        for a, b in ranges:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        base = self.rcv_nxt
        return [(seq_add(base, a), seq_add(base, b)) for a, b in reversed(merged)]

    # ----------------------------------------------------------- reliable mode

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` has something to do (None: nothing pending)."""
        return self._rto_deadline if self._unacked else None

    def handle_timer(self, now: float) -> list[Segment]:
        """Retransmit the oldest unacknowledged segment if its timeout passed.

        The timeout doubles with each retransmission (up to 64 times ``rto``)
        and starts again from ``rto`` when the peer acknowledges new data.
        """
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        old = self._unacked[0]
        fl = int(old.flags) | (_F_ACK if self.rcv_nxt is not None else 0)
        again = Segment(
            old.src_port,
            old.dst_port,
            old.seq,
            self.rcv_nxt or 0,
            FLAGS[fl],
            self.window,
            old.urgent,
            old.options,
            old.payload,
        )
        self._record_sent(again, advance=False)
        self._counters.retransmits_sent += 1
        self.events.append(CoreEvent("retransmit", f"retransmission timeout: seq={old.seq} sent again"))
        self._backoff = min(self._backoff * 2, 64)
        self._rto_deadline = now + self.rto * self._backoff
        log.debug(
            "port %d: retransmit seq=%d len=%d (backoff x%d)",
            self.src_port,
            old.seq,
            old.seq_len,
            self._backoff,
        )
        return [again]

    def _acked_up_to(self, ack: int) -> None:
        q = self._unacked
        while isinstance(q, deque) and q and seq_diff(seq_add(q[0].seq, q[0].seq_len), ack) <= 0:
            q.popleft()
        self._backoff = 1
        self._rto_deadline = self._now + self.rto if q else None

    def is_probe(self, msg: Message) -> bool:
        """A keepalive or zero-window probe: at most one byte at next_ackn - 1, no SYN/FIN/RST
        (Linux sends a pure ACK one below snd_una); it is counted as a retransmit."""
        return (
            self.rcv_nxt is not None
            and len(msg.payload) <= 1
            and not int(msg.flags) & _SYN_FIN_RST
            and msg.seq == seq_add(self.rcv_nxt, -1)
        )

    def window_probe(self, now: float) -> Segment:
        """A zero-window probe of ours: a pure ACK one below next_seqn, as Linux sends it
        (the peer answers with an ACK that carries its window)."""
        return self.send(seq=seq_add(self.snd_nxt, -1), flags=_F_ACK, now=now)

    def unacked_bytes(self) -> int:
        """Sequence space sent and not yet acknowledged."""
        return seq_diff(self.snd_nxt, self.snd_una)

    def record_sent(self, seg: Segment) -> None:
        """Record a segment the caller built itself and sent (numbering does not move;
        state moves for its flags, as for any segment sent)."""
        self._record_sent(seg, advance=False)

    def _record_sent(self, seg: Segment, *, advance: bool) -> None:
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

    def update_sent_seq(self, new_bytes: int) -> None:
        """Advance next_seqn by ``new_bytes``, for data sent with an explicit seq."""
        if new_bytes < 0:
            raise UsageError(f"update_sent_seq takes a byte count >= 0, got {new_bytes}")
        self.snd_nxt = seq_add(self.snd_nxt, new_bytes)

    def syn(self, now: float) -> Segment:
        """CLIENT: the SYN that opens the connection."""
        if self.syn_sent:
            raise UsageError(f"SYN already sent (state {self.state.name})")
        return self.send(flags=_F_SYN, ack=QUIET, now=now)

    def syn_ack(self, now: float) -> Segment:
        """SERVER: the SYN-ACK answering the peer's SYN."""
        if not self.syn_got:
            raise UsageError(f"no SYN from the peer to answer (state {self.state.name})")
        if self.syn_sent:
            raise UsageError(f"SYN-ACK already sent (state {self.state.name})")
        return self.send(flags=_F_SYN | _F_ACK, now=now)

    def ack_now(self, now: float, ackn: int | None = None, *, window: int | None = None) -> Segment:
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

    def fin(self, now: float) -> Segment:
        """FIN|ACK at next_seqn."""
        if not self.synchronized:
            raise UsageError(f"cannot send FIN before the handshake (state {self.state.name})")
        return self.send(flags=_F_FIN | _F_ACK, now=now)

    def rst(self, now: float, *, ack: bool = True) -> Segment:
        """RST|ACK at next_seqn (``ack=False``, or nothing received yet: a bare RST, ack 0)."""
        with_ack = ack and self.rcv_nxt is not None
        return self.send(
            flags=_F_RST | (_F_ACK if with_ack else 0),
            seq=self.snd_nxt,
            ack=AUTO if with_ack else QUIET,
            now=now,
        )

    @property
    def fin_acked(self) -> bool:
        return (
            self.fin_seq is not None
            and self.last_ackn_got is not None
            and (seq_diff(self.snd_una, self.fin_seq) > 0)
        )


# option kinds as plain ints: looking up an enum member costs more than the compare
_K_MSS: Final = int(OptionKind.MSS)
_K_WSCALE: Final = int(OptionKind.WSCALE)
_K_SACK_PERMITTED: Final = int(OptionKind.SACK_PERMITTED)
_K_TIMESTAMP: Final = int(OptionKind.TIMESTAMP)
_NOP: Final = TcpOption(int(OptionKind.NOP))
_TS: Final = struct.Struct("!II")

_new_tuple: Final = tuple.__new__
# Module globals for the members the per-segment path tests: a global costs a
# tenth of looking a member up on its enum class.
_ESTABLISHED: Final = TcpState.ESTABLISHED
_EXPECTED: Final = SegmentKind.EXPECTED
_UNEXPECTED: Final = SegmentKind.UNEXPECTED
_RETRANSMIT: Final = SegmentKind.RETRANSMIT
_OUT_OF_ORDER: Final = SegmentKind.OUT_OF_ORDER

_F_FIN: Final = 0x01
_F_SYN: Final = 0x02
_F_RST: Final = 0x04
_F_PSH: Final = 0x08
_F_ACK: Final = 0x10
_SYN_FIN_RST: Final = _F_SYN | _F_FIN | _F_RST
_HANDSHAKE_ONLY: Final = _F_ACK | _F_FIN | _F_RST | _F_SYN | int(TcpFlags.URG)


@functools.lru_cache(maxsize=64)
def _mss_option(mss: int) -> TcpOption:
    """One option object per MSS value: every SYN-ACK of a listener carries the same."""
    return TcpOption.mss(mss)


def _worth_logging(count: int) -> bool:
    """Log the 1st, 2nd, 4th, 8th ... occurrence: every overflow is counted, the log is not flooded."""
    return count & (count - 1) == 0


def _check_port(what: str, port: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
        raise UsageError(f"{what} must be an int 1..65535, got {port!r}")


def _check_uint(what: str, value: object, top: int) -> None:
    """An int (not a bool) in 0..top, else UsageError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
        raise UsageError(f"{what} must be an int 0..{top}, got {value!r}")


def check_rto(rto: object) -> None:
    """A retransmission timeout: a finite number of seconds > 0."""
    if not isinstance(rto, (int, float)) or isinstance(rto, bool) or not 0 < rto < float("inf"):
        raise UsageError(f"rto must be a number of seconds > 0, got {rto!r}")


def _check_time(now: object) -> None:
    if not isinstance(now, (int, float)) or isinstance(now, bool) or now != now:
        raise UsageError(f"now must be a number of seconds (the caller's clock), got {now!r}")


def _check_options(options: object) -> tuple[TcpOption, ...]:
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, TcpOption) for o in options):
        raise UsageError(
            "options must be a list of tcpemu.TcpOption (raw bytes: conn.segment(options=...)), "
            f"got {options!r}"
        )
    return tuple(options)


def _check_seq(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEQ_MOD:
        raise UsageError(
            f"{what} must be a 32-bit sequence number (0..2**32-1), AUTO or QUIET, got {value!r}"
        )
