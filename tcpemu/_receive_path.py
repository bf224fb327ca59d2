"""The engine's receive path: a frame classified at fixed offsets, header
prediction or the full parse, incoming faults, the core, then the trace and
the listener's part."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from ._accel import SPEEDUPS
from ._connection import UNKNOWN_MAC as _UNKNOWN_MAC
from ._connection import Connection
from ._errors import (
    MalformedFrameError,
)
from ._message import Message
from ._responder import neighbour_frame
from ._state import TcpState
from ._trace import _record
from .capture import INBOUND
from .core import (
    ConnectionCore,
    SegmentKind,
)
from .faults import FaultAction
from .wire import (
    _TS_OPTIONS,
    FLAGS,
    PredictedFields,
    Segment,
    add_vlan_tag,
    classify_untrusted,
    parse_tcp_untrusted,
    predict_untrusted,
    strip_vlan_tag,
)
from .wire import RST_BIT as _RST_BIT
from .wire import _timestamp_options as _ts_options

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("tcpemu.engine")
trace_log = logging.getLogger("tcpemu.trace")
BATCH: Final = 256
_EXPECTED: Final = SegmentKind.EXPECTED  # a global: quicker than the member looked up on its class
_RETRANSMIT: Final = SegmentKind.RETRANSMIT


_TPID: Final = b"\x81\x00"  # an 802.1Q tag follows the MACs

TakePredicted = Callable[[list[bytes], int, dict[bytes, Connection], float, float, set[Connection]], int]


def _compiled_take_predicted() -> TakePredicted | None:
    if SPEEDUPS is None:
        return None
    SPEEDUPS.setup(
        ConnectionCore,
        Message,
        FLAGS,
        _ts_options,
        _TS_OPTIONS,
        _UNKNOWN_MAC,
        TcpState.ESTABLISHED,
        SegmentKind.EXPECTED,
    )
    return SPEEDUPS.take_predicted  # type: ignore[no-any-return]


TAKE_PREDICTED: Final = _compiled_take_predicted()
"""``take_predicted(frames, i, conns, now, t0, touched)``: takes frames from index ``i`` on
while each is the plainest predicted case, as :meth:`ReceivePath._predicted` would, and
returns the index of the first one it left (None: not built, or switched off)."""


class ReceivePath:
    """A part of :class:`~tcpemu.Engine` (its state lives in the engine)."""

    _trace_debug: bool = False
    """Whether tcpemu.trace logs at DEBUG: asked once per batch by the pump rather
    than once per frame (the logger's check costs as much as a tenth of a frame).
    A frame replayed by the timers (a delayed one) goes by the last batch's answer."""

    def _dispatch(self: Engine, frame: bytes, now: float, replay: bool = False) -> Connection | None:
        if not replay:
            self._frames_received += 1
        fields = predict_untrusted(frame)
        if fields is not None:
            conn = self._conns.get(fields[0])
            if conn is not None:
                if not frame.startswith(conn.local_mac) or conn.vlan is not None:
                    self._other_host += 1  # for our address, but not to our MAC (or VLAN): a NIC drops it
                    return None
                return self._predicted(conn, fields, frame, now, replay)
        vlan = None
        if frame[12:14] == _TPID:
            frame, vlan = strip_vlan_tag(frame)  # the rest reads the usual offsets
        try:
            fkey, lkey, start, end = classify_untrusted(frame)
            conn = self._conns.get(fkey)
            if conn is None:
                conn = self._listeners.get(lkey)
                syn_only = frame[start + 13] & 0x12 == 0x02
                if conn is None and syn_only and lkey in self._auto:
                    listener = self._auto[lkey]
                    if not frame.startswith(listener.local_mac) or listener.vlan != vlan:
                        self._other_host += 1
                        return None
                    conn = listener._spawn(frame, fkey, lkey)
                    if conn is None:
                        return None  # backlog full: counted by the listener
                elif conn is None or not syn_only or fkey[: len(lkey) - 2] != conn.remote_ip.packed:
                    self._unmatched += 1
                    return None
            if not frame.startswith(conn.local_mac) or conn.vlan != vlan:
                self._other_host += 1
                return None
            seg = parse_tcp_untrusted(frame, start, end)
        except MalformedFrameError as exc:
            # ARP and ICMPv6 are "not TCP" to the classifier: the filter only
            # lets neighbour frames for our addresses through, so look there
            # rather than test every TCP frame for them
            if exc.reason in ("not-ip", "not-tcp"):
                if not self._l3 and neighbour_frame(frame):
                    self._neighbour(frame)
                    return None
                if self._unfiltered:
                    # no kernel filter in front of an owned TUN/TAP: the namespace's own
                    # ICMPv6 and UDP come here too, foreign traffic rather than bad frames
                    self._unmatched += 1
                    return None
            self._malformed[exc.reason] += 1
            log.debug("%s: %s", self.name, exc)
            return None
        if conn.core.dst_port is None:
            # a listener meets its SYN: from now on it is bound to this 4-tuple
            del self._listeners[lkey]
            self._conns[fkey] = conn
            conn._key = (self._conns, fkey)
        return self._deliver(conn, seg, frame, start, now, replay, vlan=vlan)

    def _predicted(
        self: Engine, conn: Connection, fields: PredictedFields, frame: bytes, now: float, replay: bool
    ) -> Connection | None:
        """Header prediction (Van Jacobson's, as BSD and Linux's fast path
        do it): the common segment of a connection with nothing special
        about it goes from its header fields straight to the core; the rest
        is parsed and takes :meth:`_deliver`.  The result is the same."""
        _, seq, ack, flags, window, urgent, options, payload, start, end = fields
        if conn.remote_mac is not _UNKNOWN_MAC and not (conn.faults_in or self.faults_in).any:
            core = conn.core
            msg = core.receive_predicted(seq, ack, flags, window, urgent, options, payload, now)
            if msg is not None:
                self._predicted_count += 1
                # the record _record makes, from the header's fields: there is no Segment here
                raw_options = frame[start + 20 : end - len(payload)] if options else b""
                record = (now - self._t0, "<", seq, ack, flags, window, raw_options, len(payload), "")
                # the engine's step after the core (trace, the core's events, timers), written out:
                # one call less on the path every in-order frame takes
                conn._last_msg = msg
                conn._trace.append(record)
                if core.events:
                    conn._core_events(now)
                if core.reliable:
                    self._kick_timers(core.next_deadline())
                if conn._listener is not None:  # the handshake's ACK, most often
                    conn._listener._progress(conn, now)
                if self._trace_debug:
                    trace_log.debug(conn._format(record))
                return conn
            # the core turned it down: the full path, without trying the prediction again
            return self._deliver(
                conn, parse_tcp_untrusted(frame, start, end), frame, start, now, replay, True
            )
        return self._deliver(conn, parse_tcp_untrusted(frame, start, end), frame, start, now, replay)

    def _deliver(
        self: Engine,
        conn: Connection,
        seg: Segment,
        frame: bytes,
        start: int,
        now: float,
        replay: bool,
        predicted: bool = False,
        vlan: int | None = None,
    ) -> Connection | None:
        """A parsed segment for ``conn``: faults, the core, then the listener's part."""
        if conn.remote_mac is _UNKNOWN_MAC:
            conn._learn_mac(frame[6:12])
        faults = conn.faults_in or self.faults_in
        if faults.any and not replay:
            action, hold = self._injector.decide(faults)
            if action is not FaultAction.PASS:
                self._faults[f"in-{action.value}"] += 1
                conn._event(f"fault injected: {action.value} of received seq={seg.seq}")
                if action is FaultAction.DROP:
                    return None
                if action is FaultAction.DUPLICATE:
                    self._dispatch(add_vlan_tag(frame, vlan), now, replay=True)
                else:
                    self._hold(hold, INBOUND, add_vlan_tag(frame, vlan), conn)
                    return None
        core = conn.core
        msg = core.receive(seg, now, predicted=predicted, vlan=vlan)
        note = "" if msg.kind is _EXPECTED else msg.kind._value_  # the plain attribute: .value is slow
        if note and msg.kind is _RETRANSMIT and core.is_probe(msg):
            note = "probe"  # keepalive or zero-window probe: at snd_una - 1 on purpose
        if frame[start + 13] & _RST_BIT:  # the header's byte: an enum's & costs as much as a parse
            accepted = any(e.kind == "rst-accepted" for e in core.events)
            note = f"{note}, RST accepted" if accepted else f"{note}, RST ignored"
            note = note.lstrip(", ")
        record = _record(now - self._t0, "<", seg, frame[start + 20 : start + (seg.data_offset or 20)], note)
        # the engine's step after the core, written out as in _predicted: every unexpected segment comes here
        conn._last_msg = msg
        conn._trace.append(record)
        if core.events:
            conn._core_events(now)
        if core.reliable:
            self._kick_timers(core.next_deadline())
        if conn._listener is not None:
            conn._listener._progress(conn, now)
        if self._trace_debug:
            trace_log.debug(conn._format(record))
        return conn
