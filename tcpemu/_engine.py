"""The trio engine: one packet pump per interface and the async connection API.

``open_engine`` owns a nursery that runs the pump.  The pump waits for the
link to be readable, drains a batch of frames, classifies each one at fixed
offsets, hands it to the matching connection's sans-IO core and wakes that
connection's waiters.  It never blocks on a consumer: each core's queue is
bounded and an overflow is counted and logged.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import logging
import math
import os
import pathlib
import random
import struct
import time
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType, TracebackType
from typing import Final, TypeVar

import trio

from . import _bpf, malform, neighbour, net
from ._errors import (
    ConnectionBrokenError,
    ConnectionClosedError,
    EngineBrokenError,
    LabError,
    MalformedFrameError,
    TcpemuTimeoutError,
    UsageError,
    WouldBlock,
)
from ._io import FrameLink, PacketLink, PacketRing
from ._trace import format_fields
from .capture import INBOUND, OUTBOUND, PcapngWriter
from .core import (
    AUTO,
    DEFAULT_MSS,
    Auto,
    ConnectionCore,
    ConnectionStatistics,
    Message,
    Mode,
    Quiet,
    SegmentKind,
    TcpState,
    _worth_logging,
    check_rto,
)
from .faults import NO_FAULTS, FaultAction, FaultInjector, Faults
from .wire import (
    ETH_HLEN,
    Frame,
    FrameTemplate,
    IPAddress,
    PredictedFields,
    Segment,
    TcpFlags,
    TcpOption,
    build_frame,
    classify_untrusted,
    decode_options_untrusted,
    encode_options,
    flow_key,
    format_mac,
    listen_key,
    parse_mac,
    parse_tcp_untrusted,
    predict_untrusted,
)

__all__ = [
    "Engine",
    "Connection",
    "EngineContext",
    "EngineStatistics",
    "Listener",
    "ListenerStatistics",
    "engines_on",
    "open_engine",
]

log = logging.getLogger("tcpemu.engine")
trace_log = logging.getLogger("tcpemu.trace")

T = TypeVar("T")
BATCH: Final = 256
# A connection's trace keeps, per segment, (time, "<" or ">", seq, ack, flags,
# window, option bytes, payload length, note), and per event (time, "!",
# text): numbers, strings and bytes only, so that the collector stops
# walking a record after its first pass (a deep trace of Messages and
# TcpOptions, which it walks for ever, made every full collection long),
# and without the payload (1,000 full segments are 1.4 MB per connection).
TraceRecord = tuple[object, ...]
_EXPECTED: Final = SegmentKind.EXPECTED  # a global: quicker than the member looked up on its class
_RETRANSMIT: Final = SegmentKind.RETRANSMIT
_RST: Final = TcpFlags.RST


def _record(t: float, direction: str, seg: Segment, options: bytes, note: str = "") -> TraceRecord:
    return (t, direction, seg.seq, seg.ack, int(seg.flags), seg.window, options, len(seg.payload), note)


def _template_options(frame: bytes) -> bytes:
    """The TCP option bytes of a frame a template built (no IP options or
    IPv6 extension headers)."""
    tcp = ETH_HLEN + (20 if frame[12:14] == b"\x08\x00" else 40)
    return frame[tcp + 20 : tcp + (frame[tcp + 12] >> 4) * 4]


# Full batches read back to back before the pump lets other tasks run: under
# a backlog that never empties (~5 ms of frames) the test's own tasks still
# get their turn, and a pump that empties its ring pays nothing for it.
FAIR_BATCHES: Final = 8


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    """Counters of one engine (one interface)."""

    frames_received: int
    frames_sent: int
    frames_unmatched: int
    malformed: MappingProxyType[str, int]
    kernel_drops: int
    connections: int
    queue_overflows: int
    tx_batches: int
    """Pump iterations whose replies left together in one sendmmsg()."""
    frames_truncated: int
    """Frames longer than a receive-ring slot, seen cut short."""
    faults: MappingProxyType[str, int]
    """Faults injected, by direction and kind ("out-drop", "in-delay", ...)."""
    tx_errors: int
    """Frames the pump or the timers could not send (too long for the MTU), logged as errors."""
    neighbour_replies: int
    """ARP replies and neighbour advertisements sent for emulated addresses."""
    frames_predicted: int
    """Frames taken by header prediction: straight from the header to the core, no full parse."""
    frames_other_host: int
    """TCP frames for an emulated address but addressed to another MAC (a NIC would not take
    them either): not delivered.  A neighbour entry pointing at a black hole does this."""
    frames_cut: int
    """Frames not sent because their destination MAC is cut (:meth:`Engine.cut_path`)."""
    internal_errors: int
    """Frames or timers whose handling raised (a defect): dropped, logged with the traceback."""


def _addr(value: object, what: str) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if not isinstance(value, str):
        raise UsageError(f"{what}: an IP address is a str like '198.18.0.2', got {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{what}: not an IP address: {value!r}") from None


def _endpoint(what: str, value: object, *, port_optional: bool) -> tuple[IPAddress, int | None]:
    """An (address, port) pair from the caller, checked; port None only where allowed."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise UsageError(f"{what} must be an (address, port) pair, got {value!r}")
    ip, port = value
    if port is None and port_optional:
        return _addr(ip, what), None
    _check_int(f"{what} port", port, 1, 0xFFFF)
    return _addr(ip, what), port


def _check_int(what: str, value: object, low: int, high: int) -> None:
    """An int (a bool is not one here) in low..high, else UsageError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{what} must be an int {low}..{high}, got {value!r}")


def _check_bool(what: str, value: object) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be True or False, got {value!r}")


def _check_timeout(what: str, value: object, *, positive: bool = False) -> None:
    """A number of seconds: finite (or inf), not NaN, >= 0 (> 0 if ``positive``)."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or math.isnan(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise UsageError(
            f"{what} must be a number of seconds {'> 0' if positive else '>= 0'}"
            f"{'' if positive else ' or None'}, got {value!r}"
        )


def _deadline(what: str, timeout: float | None) -> float:
    """The trio deadline of a ``timeout=`` argument (None: none)."""
    if timeout is None:
        return math.inf
    _check_timeout(f"{what}: timeout", timeout)
    return trio.current_time() + timeout


def _check_options(what: str, options: object) -> tuple[TcpOption, ...]:
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, TcpOption) for o in options):
        raise UsageError(
            f"{what}: options must be a list of tcpemu.TcpOption "
            f"(raw option bytes: conn.segment(options=b'...')), got {options!r}"
        )
    return tuple(options)


class Connection:
    """One emulated TCP connection; make it with :meth:`Engine.connection`.

    Waiting calls take ``timeout`` in seconds (None waits for ever; trio
    cancel scopes work as well) and raise :class:`~tcpemu.TcpemuTimeoutError`
    naming what was awaited and what arrived meanwhile.
    """

    def __init__(
        self,
        engine: Engine,
        core: ConnectionCore,
        *,
        local_ip: IPAddress,
        remote_ip: IPAddress,
        local_mac: bytes,
        remote_mac: bytes,
        label: str,
    ) -> None:
        self._engine = engine
        self.core = core
        self.local_ip = local_ip
        self.remote_ip = remote_ip
        self.local_mac = local_mac
        self.remote_mac = remote_mac
        self.label = label
        self._template = engine._template(local_mac, remote_mac, local_ip, remote_ip)
        self._changed = trio.Event()
        self._closed = False
        self._last_msg: Message | None = None
        self._listener: Listener | None = None
        self._key: tuple[dict[bytes, Connection], bytes] | None = None
        self._resolve_first = False
        # TraceRecords: numbers, strings and bytes, formatted only when asked
        self._trace: deque[TraceRecord] = deque(maxlen=engine._trace_depth)
        self.faults_out: Faults | None = None
        """Faults applied to this connection's outgoing frames (None: the engine's)."""
        self.faults_in: Faults | None = None
        """Faults applied to its incoming frames before the core sees them (None: the engine's)."""

    def __repr__(self) -> str:
        return (
            f"<tcpemu.Connection {self.core.mode.value} {self.local}<->{self.remote} {self.core.state.name}>"
        )

    # -------------------------------------------------------------- info

    @property
    def mode(self) -> Mode:
        return self.core.mode

    @property
    def local(self) -> tuple[str, int]:
        return (str(self.local_ip), self.core.src_port)

    @property
    def remote(self) -> tuple[str, int | None]:
        return (str(self.remote_ip), self.core.dst_port)

    @property
    def state(self) -> TcpState:
        """The emulated endpoint's own state."""
        return self.core.state

    @property
    def first_seqn_got(self) -> int | None:
        return self.core.first_seqn_got

    @property
    def last_seqn_got(self) -> int | None:
        return self.core.last_seqn_got

    @property
    def last_ackn_got(self) -> int | None:
        return self.core.last_ackn_got

    @property
    def first_seqn_sent(self) -> int | None:
        return self.core.first_seqn_sent

    @property
    def last_seqn_sent(self) -> int | None:
        return self.core.last_seqn_sent

    @property
    def last_ackn_sent(self) -> int | None:
        return self.core.last_ackn_sent

    @property
    def next_seqn(self) -> int:
        return self.core.next_seqn

    @property
    def next_ackn(self) -> int | None:
        return self.core.next_ackn

    @property
    def last_win_got(self) -> int | None:
        return self.core.last_win_got

    @property
    def fin_got(self) -> bool:
        return self.core.fin_got

    @property
    def rst_got(self) -> bool:
        return self.core.rst_got

    @property
    def window(self) -> int:
        return self.core.window

    @window.setter
    def window(self, value: int) -> None:
        """The window we advertise, in bytes (scaled on the wire when window scaling was agreed)."""
        self.core.set_window(value)

    def statistics(self) -> ConnectionStatistics:
        return self.core.statistics()

    def trace(self) -> list[str]:
        """This connection's recent segments and events, one readable line each.

        Times are seconds since the engine opened; sequence numbers are
        relative to each side's ISN.  The engine keeps the last
        ``trace_depth`` entries of each connection.
        """
        return [self._format(record) for record in self._trace]

    def _format(self, record: TraceRecord) -> str:
        """One line of :meth:`trace`, as the ``tcpemu.trace`` logger also gets it."""
        t, kind, *rest = record
        if kind == "!":
            return f"{t:10.6f} {self.label}! {rest[0]}"
        seq, ack, flags, window, raw_options, length, note = rest
        outgoing = kind == ">"
        try:
            options = decode_options_untrusted(raw_options)
        except MalformedFrameError:  # sent on purpose by the test, or a hostile peer
            options, note = (), f"{note} options {raw_options.hex()}".strip()
        core = self.core
        return format_fields(
            seq,
            ack,
            flags,
            window,
            options,
            length,
            time=t,
            outgoing=outgoing,
            seq_base=core.iss if outgoing else core.irs,
            ack_base=core.irs if outgoing else (core.iss if core.syn_sent else None),
            label=self.label,
            note=note,
        )

    def _learn_mac(self, mac: bytes, how: str = "learnt from the peer's first frame") -> None:
        """remote_mac was not given: the peer's first frame tells it, or ARP/NDP did."""
        self.remote_mac = mac
        self._template = self._engine._template(self.local_mac, mac, self.local_ip, self.remote_ip)
        self._event(f"remote MAC {how}: {format_mac(mac)}")

    def _core_events(self, now: float | None = None) -> None:
        """What the core reported (state moves, RSTs taken or ignored, overflows), into the trace."""
        for event in self.core.pop_events():
            self._event(event.text, now)

    def _event(self, text: str, now: float | None = None) -> None:
        """A line in the trace at ``now`` (default: the current time)."""
        if now is None:
            now = trio.current_time()
        self._trace.append((now - self._engine._t0, "!", text))
        trace_log.debug("%s%s", self.label, text)

    # ----------------------------------------------------------- plumbing

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _check_usable(self, what: str) -> None:
        self._engine._check_running(what)  # the engine first: its closing closes us too
        if self._closed:
            raise ConnectionClosedError(f"{what}: this connection was closed (destroyed) by the test")

    def _check_rst(self, what: str) -> None:
        if self.core.rst_got:
            raise ConnectionBrokenError(
                f"{what}: the peer reset the connection"
                + (f" (RST seq={self._last_msg.seq})" if self._last_msg else "")
            )

    def _arrived(self, before: int) -> str:
        n = self.core.statistics().segments_received - before
        if n == 0:
            return "nothing arrived"
        last = self._last_msg
        desc = (
            f"; last: {last.flags.short()} seq={last.seq} ack={last.ack} len={len(last.payload)}"
            f" ({last.kind.value})"
            if last
            else ""
        )
        return f"{n} segment{'s' if n != 1 else ''} arrived{desc}"

    async def _wait(
        self, what: str, timeout: float | None, ready: Callable[[], T | None], deadline: float | None = None
    ) -> T:
        """Wait until ``ready()`` returns non-None; it may raise to end the wait.

        trio's rule: a call cancelled before anything happened raises and did
        nothing; ``ready()`` runs with no checkpoint between its effect and
        the return, so a result is never lost to a cancellation.
        """
        if deadline is None:
            deadline = _deadline(what, timeout)
        self._check_usable(what)
        await trio.lowlevel.checkpoint_if_cancelled()
        before = self.core.statistics().segments_received
        with trio.move_on_at(deadline):
            while True:
                self._check_usable(what)
                result = ready()
                if result is not None:
                    return result
                await self._changed.wait()
        error = f"{what}: timed out after {timeout} s; {self._arrived(before)}"
        self._event(error)
        raise TcpemuTimeoutError(error)

    def _transmit(self, seg: Segment, note: str = "") -> Segment:
        self._engine._send_segment(self, seg, note)
        return seg

    async def wait_until(
        self, predicate: Callable[[Connection], bool], *, timeout: float | None = None, what: str = ""
    ) -> None:
        """Wait until ``predicate(conn)`` is true; it is checked after every segment received.

        For conditions the other calls do not name, e.g.
        ``await conn.wait_until(lambda c: c.statistics().retransmits_seen >= 2, timeout=3)``.
        """
        if not callable(predicate):
            raise UsageError(f"wait_until: predicate must be callable, got {predicate!r}")
        if not isinstance(what, str):
            raise UsageError(f"wait_until: what must be a str, got {what!r}")
        label = f"wait_until ({what or getattr(predicate, '__name__', 'condition')})"
        await self._wait(label, timeout, lambda: True if predicate(self) else None)

    # ------------------------------------------------------------- handshake

    async def wait_open(self, timeout: float | None = None) -> None:
        """Complete the handshake: answer the peer's SYN (SERVER) or its SYN-ACK (CLIENT).

        Nothing is sent before this is called, which is how a test holds the
        peer in SYN-SENT or SYN-RECEIVED.  Returns at once if already open.
        The handshake's SYN and pure ACK segments leave the receive queue;
        data that came with them stays.
        """
        what = "wait_open"
        core = self.core
        deadline = _deadline(what, timeout)  # one bound for the resolution and the handshake
        self._check_usable(what)
        if self._resolve_first:
            # CLIENT without remote_mac: find the peer's MAC, then send the SYN
            with trio.move_on_at(deadline):
                try:
                    mac = await self._engine.resolve(
                        self.remote_ip, local_ip=self.local_ip, local_mac=self.local_mac
                    )
                except TcpemuTimeoutError as exc:
                    raise TcpemuTimeoutError(f"wait_open: the peer's MAC is unknown: {exc}") from None
                self._learn_mac(parse_mac(mac), "resolved with ARP/NDP")
                self._resolve_first = False
                self._transmit(core.syn(trio.current_time()))
            if self._resolve_first:
                error = (
                    f"wait_open: timed out after {timeout} s resolving {self.remote_ip}'s MAC "
                    "(no ARP/NDP answer); no SYN sent"
                )
                self._event(error)
                raise TcpemuTimeoutError(error)

        def step() -> bool | None:
            self._check_rst(what)
            answer, opened = core.handshake(trio.current_time())
            if answer is not None:
                self._transmit(answer)
            return True if opened else None

        waiting = "the peer's SYN" if core.mode is Mode.SERVER else "the peer's SYN-ACK"
        await self._wait(f"{what} (waiting for {waiting}, then its ACK)", timeout, step, deadline)
        # the handshake's own segments are not messages for the test to read
        core.discard_handshake()

    # --------------------------------------------------------------- receive

    async def wait_msg(self, timeout: float | None = None) -> Message:
        """The oldest queued segment that moved the receive state (not a
        retransmit), waiting for one if needed.  Consumes nothing."""
        return await self._wait("wait_msg (an expected segment)", timeout, self.core.peek_expected)

    async def recv_msg(
        self, timeout: float | None = None, *, ack: bool = True, skip_retransmits: bool = False
    ) -> Message:
        """Pop the oldest queued segment (pure ACKs included), waiting if none.

        ack=True acknowledges it when it takes sequence space (data, SYN or
        FIN): an ACK of next_ackn.  skip_retransmits=True drops queued
        retransmits (segments whose sequence number was already seen).
        """
        what = "recv_msg" + (" (skipping retransmits)" if skip_retransmits else "")
        _check_bool("recv_msg: ack", ack)

        def ready() -> Message | None:
            if self.core.peek_message(skip_retransmits=skip_retransmits) is None:
                if self.core.rst_got:
                    self._check_rst(what)
                return None
            return self.core.pop_message_nowait(skip_retransmits=skip_retransmits)

        msg = await self._wait(what, timeout, ready)
        self._ack_read(msg, ack)
        return msg

    def recv_msg_nowait(self, *, ack: bool = True, skip_retransmits: bool = False) -> Message:
        """Like :meth:`recv_msg`, raising :class:`~tcpemu.WouldBlock` when nothing is queued."""
        self._check_usable("recv_msg_nowait")
        _check_bool("recv_msg_nowait: ack", ack)
        msg = self.core.pop_message_nowait(skip_retransmits=skip_retransmits)
        self._ack_read(msg, ack)
        return msg

    def _ack_read(self, msg: Message, ack: bool) -> None:
        """recv_msg's ACK: for what takes sequence space, never for a RST or a pure ACK."""
        if ack and msg.seq_len and not msg.flags & TcpFlags.RST:
            self._transmit(self.core.ack_now(trio.current_time()))

    async def recv_data(self, idle: float, *, ack: bool = True, timeout: float | None = None) -> bytes:
        """All payload the peer sends, in order, until it is idle for ``idle`` s or sends FIN.

        Out-of-order segments are reassembled.  Queued messages are consumed.
        ack=True acknowledges new data as it arrives (and answers a
        retransmitted or out-of-order segment with a duplicate ACK).  Raises
        TcpemuTimeoutError if nothing at all arrived within ``idle`` (or
        ``timeout``, an overall bound), and ConnectionBrokenError on a RST.
        Cancelled, it loses nothing: the bytes read so far are put back for
        the next read.
        """
        self._check_usable("recv_data")
        _check_timeout("recv_data: idle", idle, positive=True)
        overall = _deadline("recv_data", timeout)
        _check_bool("recv_data: ack", ack)
        await trio.lowlevel.checkpoint_if_cancelled()
        core = self.core
        data = bytearray()
        before = core.statistics().segments_received
        try:
            with trio.move_on_at(overall) as overall_scope:
                while True:
                    data += core.read_stream()
                    if ack and core.should_ack():
                        self._transmit(core.ack_now(trio.current_time()))
                    if core.fin_got:
                        return bytes(data)
                    if core.rst_got:
                        raise ConnectionBrokenError(
                            f"recv_data: the peer reset the connection after {len(data)} bytes"
                        )
                    with trio.move_on_after(idle) as idle_scope:
                        self._check_usable("recv_data")
                        await self._changed.wait()
                    if idle_scope.cancelled_caught:
                        break
        except BaseException:
            core.unread(bytes(data))  # cancelled, reset or closed: the next read gets them
            raise
        if data:
            return bytes(data)
        bound = f"{timeout} s" if overall_scope.cancelled_caught else f"idle {idle} s"
        raise TcpemuTimeoutError(f"recv_data: no data within {bound}; {self._arrived(before)}")

    async def recv_exactly(self, n: int, timeout: float | None = None, *, ack: bool = True) -> bytes:
        """Exactly ``n`` bytes of the in-order stream (no more are consumed), waiting for them.

        Raises ConnectionBrokenError on a RST, and TcpemuTimeoutError naming
        how many bytes came when the FIN arrives first or ``timeout`` passes
        (the bytes stay unread then).
        """
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise UsageError(f"recv_exactly: n must be an int >= 0, got {n!r}")
        _check_bool("recv_exactly: ack", ack)
        core = self.core
        what = f"recv_exactly ({n} bytes)"

        def ready() -> bytes | None:
            if core.stream_available() >= n:
                data = core.read_bytes(n)
                if ack and core.should_ack():
                    self._transmit(core.ack_now(trio.current_time()))
                return data
            self._check_rst(what)
            if core.fin_got:
                raise TcpemuTimeoutError(
                    f"{what}: the peer sent FIN after {core.stream_available()} bytes; they stay unread"
                )
            if ack and core.should_ack():
                self._transmit(core.ack_now(trio.current_time()))
            return None

        return await self._wait(what, timeout, ready)

    # ------------------------------------------------------------------ send

    async def send_msg(
        self,
        payload: bytes = b"",
        *,
        seq: int | Auto | Quiet = AUTO,
        ack: int | Auto | Quiet = AUTO,
        flags: TcpFlags | int | None = None,
        window: int | None = None,
        options: list[TcpOption] | tuple[TcpOption, ...] | None = None,
        urgent: int = 0,
    ) -> Segment:
        """Send one segment; see :meth:`tcpemu.core.ConnectionCore.send` for the numbering.

        Cancelled before it sends, it raises and sends nothing; once sent, it returns.
        """
        self._check_usable("send_msg")
        await trio.lowlevel.checkpoint_if_cancelled()
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise UsageError(f"send_msg: payload must be bytes, got {type(payload).__name__}")
        if options is not None:
            options = _check_options("send_msg", options)
        room = self._engine._payload_room(self, options)
        if len(payload) > room:
            raise UsageError(
                f"send_msg: {len(payload)} payload bytes do not fit in one frame "
                f"(at most {room} with MTU {self._engine._link.mtu}); "
                "IP fragmentation is not implemented yet"
            )
        seg = self.core.send(
            payload,
            seq=seq,
            ack=ack,
            flags=flags,
            window=window,
            options=options,
            urgent=urgent,
            now=trio.current_time(),
        )
        self._transmit(seg)
        await trio.lowlevel.cancel_shielded_checkpoint()
        return seg

    def segment(self, payload: bytes = b"", **fields: object) -> SegmentSpec:
        """A mutable description of one segment, every TCP and IP field open.

        Defaults come from the connection (seq = next_seqn, ack = next_ackn,
        ACK|PSH as send_msg would, the current window, no options); any
        field can be given here or changed afterwards.  Nothing is sent or
        recorded until :meth:`send_segments`.
        """
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise UsageError(f"segment: payload must be bytes, got {type(payload).__name__} {payload!r}")
        core = self.core
        spec = SegmentSpec(
            payload=bytes(payload),
            seq=core.snd_nxt,
            ack=core.rcv_nxt or 0,
            flags=TcpFlags.ACK | (TcpFlags.PSH if payload else 0)
            if core.rcv_nxt is not None
            else TcpFlags(0),
            window=min(core.window >> core.rcv_wscale, 0xFFFF),
        )
        for name, value in fields.items():
            if not hasattr(spec, name):
                raise UsageError(
                    f"segment(): no field {name!r}; fields: {', '.join(SegmentSpec.__dataclass_fields__)}"
                )
            setattr(spec, name, value)
        spec.check()
        return spec

    def stream_segments(self, data: bytes, cuts: list[int]) -> list[SegmentSpec]:
        """``data`` cut at the offsets ``cuts`` into segments that continue from next_seqn.

        Send them in any order (or some twice) with :meth:`send_segments`,
        then ``update_sent_seq(len(data))``.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"stream_segments: data must be bytes, got {type(data).__name__}")
        if not isinstance(cuts, (list, tuple)) or not all(
            isinstance(c, int) and not isinstance(c, bool) for c in cuts
        ):
            raise UsageError(f"stream_segments: cuts must be a list of int offsets, got {cuts!r}")
        bounds = [0, *sorted(set(cuts)), len(data)]
        if bounds[1] < 0 or bounds[-2] > len(data):
            raise UsageError(f"cuts must lie within 0..{len(data)}, got {cuts}")
        base = self.core.snd_nxt
        return [
            self.segment(data[a:b], seq=(base + a) % 2**32) for a, b in itertools.pairwise(bounds) if b > a
        ]

    async def send_segments(self, specs: list[SegmentSpec] | SegmentSpec) -> list[bytes]:
        """Send segments exactly as described, in the order given; returns the frames sent.

        The connection's numbering does not move (see :meth:`update_sent_seq`);
        the segments are recorded as sent (last_seqn_sent, the trace, the capture).
        """
        self._check_usable("send_segments")
        listed = [specs] if isinstance(specs, SegmentSpec) else specs
        if not isinstance(listed, (list, tuple)) or not all(isinstance(x, SegmentSpec) for x in listed):
            raise UsageError(f"send_segments takes a SegmentSpec or a list of them, got {specs!r}")
        # every frame is built (and checked) before the first leaves: all or nothing
        built = [(spec.encode(self), spec.as_segment(self)) for spec in listed]
        await trio.lowlevel.checkpoint_if_cancelled()
        t = trio.current_time() - self._engine._t0
        for frame, seg in built:
            self.core.record_sent(seg)
            # from the options, not the frame: a spec may give any data offset
            note = "path cut: not sent" if frame[:6] in self._engine._cut else ""
            self._trace.append(_record(t, ">", seg, encode_options(seg.options), note))
            self._engine._transmit([frame])
        self._core_events()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return [frame for frame, _ in built]

    async def send_frames(self, frames: list[bytes]) -> None:
        """Put raw frames on the link for this connection, as they are (fragments,
        frames broken with :mod:`tcpemu.malform`).  Nothing is recorded in the
        connection's numbering; the capture has them."""
        self._check_usable("send_frames")
        if not isinstance(frames, (list, tuple)) or not all(
            isinstance(f, (bytes, bytearray)) and len(f) >= ETH_HLEN for f in frames
        ):
            raise UsageError(
                f"send_frames takes a list of Ethernet frames (bytes of at least {ETH_HLEN}), got {frames!r}"
            )
        await trio.lowlevel.checkpoint_if_cancelled()
        for frame in frames:
            self._trace.append(
                (trio.current_time() - self._engine._t0, "!", f"raw frame of {len(frame)} bytes sent")
            )
            self._engine._transmit([bytes(frame)])
        await trio.lowlevel.cancel_shielded_checkpoint()

    def update_sent_seq(self, new_bytes: int) -> None:
        """Advance next_seqn by ``new_bytes`` (after sending with an explicit seq)."""
        if not isinstance(new_bytes, int) or isinstance(new_bytes, bool):
            raise UsageError(f"update_sent_seq takes an int byte count, got {new_bytes!r}")
        self.core.update_sent_seq(new_bytes)

    async def send_data(self, data: bytes, *, timeout: float | None = None, mss: int | None = None) -> None:
        """Send a byte stream as a well-behaved sender would: segments of at most
        the peer's MSS, never more in flight than the peer's window allows.

        With ``reliable=True`` lost segments are sent again on timeout, so the
        stream arrives whole; without it, what is lost stays lost.  A zero
        window is probed (a pure ACK one below next_seqn) every 0.5 s.
        Returns once everything is handed to the link, not once acknowledged:
        ``await conn.wait_until(lambda c: c.core.unacked_bytes() == 0)`` for that.
        Like trio's ``send_all``, a cancelled or timed-out call leaves the
        segments already sent on the wire: ``next_seqn`` says how far it got.
        """
        self._check_usable("send_data")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise UsageError(f"send_data: data must be bytes, got {type(data).__name__}")
        if mss is not None:
            _check_int("send_data: mss", mss, 1, 0xFFFF)
        deadline = _deadline("send_data", timeout)
        core = self.core
        seg_max = min(
            mss or core.peer_mss or DEFAULT_MSS,
            self._engine._payload_room(self, None),
        )
        view = memoryview(data)
        with trio.move_on_at(deadline):
            while view:
                n = min(seg_max, len(view))

                def room(c: Connection, n: int = n) -> bool:
                    c._check_rst("send_data")
                    return core.unacked_bytes() + n <= (c.last_win_got or 0)

                if not room(self):
                    try:
                        await self.wait_until(room, timeout=0.5, what="room in the peer's window")
                    except TcpemuTimeoutError:
                        if core.unacked_bytes() == 0 and core.next_deadline() is None:
                            # a lost window update would wait for ever: probe
                            self._transmit(core.window_probe(trio.current_time()), "window probe")
                        continue
                await self.send_msg(bytes(view[:n]))
                view = view[n:]
            return
        raise TcpemuTimeoutError(f"send_data: {len(view)} of {len(data)} bytes not sent within {timeout} s")

    async def send_ack(self, ackn: int | None = None, *, window: int | None = None) -> Segment:
        """A pure ACK: of next_ackn, or of ``ackn``; ``window`` is the raw window field
        (default: the connection's window, scaled as agreed)."""
        self._check_usable("send_ack")
        if ackn is not None:
            _check_int("send_ack: ackn", ackn, 0, 0xFFFFFFFF)
        if window is not None:
            _check_int("send_ack: window", window, 0, 0xFFFF)
        await trio.lowlevel.checkpoint_if_cancelled()
        seg = self._transmit(self.core.ack_now(trio.current_time(), ackn, window=window))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return seg

    async def ack_all(self) -> Segment:
        """Acknowledge everything received in order (an ACK of next_ackn)."""
        return await self.send_ack()

    async def send_fin(self, timeout: float | None = None) -> Segment:
        """Send FIN|ACK at next_seqn and wait until the peer acknowledges it.

        Refused (nothing sent) after the peer's RST.  Cancelled or timed out
        while waiting for the ACK, the FIN stays sent (the state shows it).
        """
        what = "send_fin (waiting for the ACK of our FIN)"
        deadline = _deadline("send_fin", timeout)
        self._check_usable("send_fin")
        self._check_rst("send_fin")
        await trio.lowlevel.checkpoint_if_cancelled()
        seg = self._transmit(self.core.fin(trio.current_time()))

        def acked() -> bool | None:
            self._check_rst(what)
            return True if self.core.fin_acked else None

        await self._wait(what, timeout, acked, deadline)
        return seg

    async def send_fin_ack(self, timeout: float | None = None) -> Segment:
        """The old API's name for :meth:`send_fin`: FIN|ACK, then wait for its ACK."""
        return await self.send_fin(timeout)

    async def send_rst(self, *, ack: bool = True) -> Segment:
        """Send RST|ACK at next_seqn; waits for nothing.  ``ack=False``: a bare RST (no ACK
        flag, ack field 0), as a stack answers a segment for no connection."""
        self._check_usable("send_rst")
        _check_bool("send_rst: ack", ack)
        await trio.lowlevel.checkpoint_if_cancelled()
        seg = self._transmit(self.core.rst(trio.current_time(), ack=ack))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return seg

    # ----------------------------------------------------------------- close

    async def aclose(self) -> None:
        """Destroy: stop receiving for this connection.  Sends nothing (no FIN, no RST)."""
        if not self._closed:
            self._closed = True
            self._engine._unregister(self)
            self._wake()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass
class SegmentSpec:
    """Every field of one segment and of its IP header, for :meth:`Connection.send_segments`.

    ``options`` is a list of :class:`~tcpemu.TcpOption` or raw bytes (put
    as they are, padded to 4 bytes); ``data_offset`` (in 32-bit words) and
    ``checksum`` override what encoding computed, after encoding; so do
    ``ip_checksum`` and ``ip_total_length``.  ``tos`` carries the ECN bits
    in its low two; ``ip_options`` are IPv4 header options.
    """

    payload: bytes = b""
    seq: int = 0
    ack: int = 0
    flags: TcpFlags | int = 0
    window: int = 0
    urgent: int = 0
    options: list[TcpOption] | bytes = field(default_factory=list)
    data_offset: int | None = None
    checksum: int | None = None
    ttl: int = 64
    tos: int = 0
    ip_id: int = 0
    df: bool = True
    ip_options: bytes = b""
    ip_checksum: int | None = None
    ip_total_length: int | None = None

    def check(self) -> None:
        """Every field in its range on the wire, else UsageError naming it."""
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise UsageError(f"segment: payload must be bytes, got {type(self.payload).__name__}")
        for name, top in (
            ("seq", 0xFFFFFFFF),
            ("ack", 0xFFFFFFFF),
            ("flags", 0xFFF),
            ("window", 0xFFFF),
            ("urgent", 0xFFFF),
            ("ttl", 255),
            ("tos", 255),
            ("ip_id", 0xFFFF),
        ):
            _check_int(f"segment: {name}", getattr(self, name), 0, top)
        for name, top in (
            ("data_offset", 15),
            ("checksum", 0xFFFF),
            ("ip_checksum", 0xFFFF),
            ("ip_total_length", 0xFFFF),
        ):
            if getattr(self, name) is not None:
                _check_int(f"segment: {name}", getattr(self, name), 0, top)
        if not isinstance(self.df, bool):
            raise UsageError(f"segment: df must be True or False, got {self.df!r}")
        if not isinstance(self.ip_options, bytes) or len(self.ip_options) > 40:
            raise UsageError(f"segment: ip_options must be at most 40 bytes, got {self.ip_options!r}")
        if isinstance(self.options, bytes):
            if len(self.options) > 40:
                raise UsageError(f"segment: raw options of {len(self.options)} bytes exceed 40")
        else:
            encode_options(_check_options("segment", self.options))

    def as_segment(self, conn: Connection) -> Segment:
        opts = tuple(self.options) if isinstance(self.options, list) else ()
        return Segment(
            conn.core.src_port,
            conn.core.dst_port or 0,
            self.seq % 2**32,
            self.ack % 2**32,
            TcpFlags(int(self.flags) & 0x1FF),
            self.window,
            self.urgent,
            opts,
            self.payload,
        )

    def encode(self, conn: Connection) -> bytes:
        self.check()  # fields may have been changed since segment() made it
        seg = self.as_segment(conn)
        raw_opts = self.options if isinstance(self.options, bytes) else encode_options(self.options)
        raw_opts += b"\x00" * (-len(raw_opts) % 4)
        frame = Frame(
            conn.local_mac,
            conn.remote_mac,
            conn.local_ip,
            conn.remote_ip,
            seg,
            self.ttl,
            self.tos,
            self.ip_id,
            self.df,
        )
        data = build_frame(
            frame, raw_options=raw_opts, ip_options=self.ip_options, reserved_flags=int(self.flags) >> 9
        )
        if self.data_offset is not None:
            data = malform.set_data_offset(data, self.data_offset)
        if self.ip_total_length is not None:
            data = malform.set_ip_total_length(data, self.ip_total_length)
        if self.checksum is not None:
            data = malform.set_tcp_checksum(data, self.checksum)
        if self.ip_checksum is not None:
            b = bytearray(data)
            struct.pack_into("!H", b, 24, self.ip_checksum & 0xFFFF)
            data = bytes(b)
        return data


def _neighbour_frame(frame: bytes) -> bool:
    """ARP, or IPv6 carrying ICMPv6 (neighbour discovery lives there)."""
    ethertype = frame[12:14]
    return ethertype == b"\x08\x06" or (ethertype == b"\x86\xdd" and frame[20] == 58)


_UNKNOWN_MAC: Final = bytes(6)  # remote_mac to be learnt from the peer's first frame

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


@dataclass(frozen=True, slots=True)
class ListenerStatistics:
    syns: int
    accepted: int
    waiting: int
    backlog_overflows: int


class Listener:
    """A listening endpoint made by :meth:`Engine.listen`; usable as ``async with``."""

    def __init__(
        self,
        engine: Engine,
        local_ip: IPAddress,
        local_port: int,
        local_mac: bytes,
        *,
        window: int | None,
        mss: int | None,
        backlog: int,
        auto_open: bool,
        max_queue: int,
    ) -> None:
        self._engine = engine
        self.local_ip = local_ip
        self.local_port = local_port
        self.local_mac = local_mac
        self._window, self._mss, self._max_queue = window, mss, max_queue
        # every connection's core is forked from this one: the arguments are
        # checked here, once, and not again for each SYN
        self._prototype = self._new_prototype()
        self.backlog = backlog
        self.auto_open = auto_open
        self._handshaking: set[Connection] = set()
        self._ready: deque[Connection] = deque()
        self._changed = trio.Event()
        self._closed = False
        self._syns = 0
        self._accepted = 0
        self._overflows = 0

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(
            syns=self._syns,
            accepted=self._accepted,
            waiting=len(self._ready) + len(self._handshaking),
            backlog_overflows=self._overflows,
        )

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _new_prototype(self) -> ConnectionCore:
        engine = self._engine
        return ConnectionCore(
            Mode.SERVER,
            src_port=self.local_port,
            dst_port=None,
            isn=0,
            window=self._window,
            mss=self._mss,
            max_queue=self._max_queue,
            reliable=engine.reliable,
            rto=engine.rto,
        )

    def _spawn(self, frame: bytes, fkey: bytes, lkey: bytes) -> Connection | None:
        self._syns += 1
        if len(self._ready) + len(self._handshaking) >= self.backlog:
            self._overflows += 1
            if _worth_logging(self._overflows):
                log.warning(
                    "listener %s:%d: backlog of %d full, SYN not answered (%d so far)",
                    self.local_ip,
                    self.local_port,
                    self.backlog,
                    self._overflows,
                )
            return None
        n = len(lkey) - 2
        engine = self._engine
        remote_ip = engine._address(fkey[:n])
        (remote_port,) = struct.unpack_from("!H", fkey, 2 * n)
        proto = self._prototype
        if proto.reliable != engine.reliable or proto.rto != engine.rto:
            proto = self._prototype = self._new_prototype()  # the engine's settings were changed
        core = proto.fork(dst_port=remote_port, isn=engine._rng.getrandbits(32))
        engine._label_seq += 1
        conn = Connection(
            engine,
            core,
            local_ip=self.local_ip,
            remote_ip=remote_ip,
            local_mac=self.local_mac,
            remote_mac=frame[6:12],
            label=f"c{engine._label_seq} ",
        )
        conn._listener = self
        engine._register(conn, engine._conns, fkey)  # the listener's address is in the filter already
        self._handshaking.add(conn)
        return conn

    def _progress(self, conn: Connection, now: float) -> None:
        """After each segment of a connection still in this listener."""
        core = conn.core
        if core.syn_got and not core.syn_sent:
            if self.auto_open:
                conn._transmit(core.syn_ack(now))
            else:
                self._wake()  # accept() hands it out unanswered
                return
        if core.opened or core.rst_got or core.state is TcpState.CLOSED:
            self._handshaking.discard(conn)
            conn._listener = None
            if core.opened:
                core.discard_handshake()
                self._ready.append(conn)
                self._wake()
            else:
                self._engine._unregister(conn)

    async def accept(self, timeout: float | None = None) -> Connection:
        """The next connection; established when ``auto_open``, else answer it with ``wait_open``."""
        if timeout is None:
            return await self._accept()  # no cancel scope of our own to enter and leave
        with trio.move_on_at(_deadline("accept", timeout)):
            return await self._accept()
        raise TcpemuTimeoutError(
            f"accept on {self.local_ip}:{self.local_port}: no connection within {timeout} s "
            f"({self._syns} SYNs seen, {len(self._handshaking)} handshakes unfinished)"
        )

    async def _accept(self) -> Connection:
        while True:
            try:
                return self.accept_nowait()
            except WouldBlock:
                await self._changed.wait()

    def accept_nowait(self) -> Connection:
        if self._closed:
            raise ConnectionClosedError(f"listener {self.local_ip}:{self.local_port} is closed")
        self._engine._check_running("accept")
        if self._ready:
            self._accepted += 1
            return self._ready.popleft()
        if not self.auto_open:
            for conn in self._handshaking:
                if conn.core.syn_got and not conn.core.syn_sent:
                    self._handshaking.discard(conn)
                    conn._listener = None
                    self._accepted += 1
                    return conn
        raise WouldBlock(f"no connection waiting on {self.local_ip}:{self.local_port}")

    async def aclose(self) -> None:
        """Stop listening; connections not accepted yet are destroyed (nothing is sent)."""
        if not self._closed:
            self._closed = True
            self._engine._auto.pop(listen_key(self.local_ip, self.local_port), None)
            for conn in [*self._ready, *self._handshaking]:
                await conn.aclose()
            self._ready.clear()
            self._handshaking.clear()
            self._changed.set()
            self._engine._release_address(self.local_ip)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Engine:
    """Packet pump and dispatch table for one link; use :func:`open_engine`."""

    def __repr__(self) -> str:
        where = f" netns {self._where[0]}" if self._where and self._where[0] else ""
        state = "closed" if self._closed else "broken" if self._broken is not None else "open"
        return f"<tcpemu.Engine {self.name}{where} {state}, {len(self._all)} connections>"

    def __init__(
        self,
        link: FrameLink,
        *,
        rng: random.Random,
        max_queue: int = 4096,
        name: str = "",
        busy_poll: float = 0.0,
        trace_depth: int = 1000,
        capture: PcapngWriter | None = None,
        reliable: bool = False,
        rto: float = 0.2,
        faults_out: Faults | None = None,
        faults_in: Faults | None = None,
        answer_neighbours: bool | None = None,
        owned_addresses: frozenset[IPAddress] = frozenset(),
    ) -> None:
        self._link = link
        self._reliable = False
        self._rto = 0.2
        self.reliable = reliable
        self.rto = rto
        self.faults_out = faults_out or NO_FAULTS
        self.faults_in = faults_in or NO_FAULTS
        self._injector = FaultInjector(random.Random(rng.getrandbits(64)))
        self._faults: Counter[str] = Counter()
        # frames held back by fault injection: (release time, order, direction, frame, connection)
        self._held: list[tuple[float, int, int, bytes, Connection]] = []
        self._held_seq = itertools.count()
        self._timer_wakeup = trio.Event()
        self._planned = math.inf
        self.answer_neighbours = answer_neighbours
        self._owned: frozenset[IPAddress] = owned_addresses
        self._neighbour_macs: dict[IPAddress, bytes] = {}  # addresses we answer ARP/NS for
        self._resolving: dict[IPAddress, tuple[trio.Event, list[bytes]]] = {}
        self._neighbour_replies = 0
        self._background = False
        self._tx_errors = 0
        self._trace_depth = trace_depth
        self.capture = capture
        self.recent: deque[Connection] = deque(maxlen=64)
        """The connections made most recently (destroyed ones too), for reports."""
        self._rng = rng
        self._max_queue = max_queue
        self.name = name
        self._conns: dict[bytes, Connection] = {}
        self._listeners: dict[bytes, Connection] = {}
        self._auto: dict[bytes, Listener] = {}
        self._all: set[Connection] = set()
        self._addr_refs: Counter[IPAddress] = Counter()  # who needs each address in the filter
        self._filtered: frozenset[IPAddress] | None = None
        self._outbox: list[bytes] | None = None
        self._templates: dict[tuple[bytes, bytes, bytes, bytes], FrameTemplate] = {}
        self._addresses: dict[bytes, IPAddress] = {}
        self._tx_batches = 0
        self._busy_poll = busy_poll
        self._frames_received = 0
        self._predicted_count = 0
        self._frames_sent = 0
        self._unmatched = 0
        self._malformed: Counter[str] = Counter()
        self._broken: BaseException | None = None
        self._closed = False
        self._t0 = trio.current_time()
        self._label_seq = 0
        self._other_host = 0
        self._internal_errors = 0
        self._cut: frozenset[bytes] = frozenset()
        self._frames_cut = 0
        self._where: tuple[str | None, str] | None = None  # (netns, ifname) of a packet socket

    # ---------------------------------------------------------------- public

    @property
    def reliable(self) -> bool:
        """Whether new connections retransmit what the peer does not acknowledge."""
        return self._reliable

    @reliable.setter
    def reliable(self, value: bool) -> None:
        _check_bool("reliable", value)
        self._reliable = value

    @property
    def rto(self) -> float:
        """The retransmission timeout (seconds) of new reliable connections."""
        return self._rto

    @rto.setter
    def rto(self, value: float) -> None:
        check_rto(value)  # checked here: a bad value must not reach the pump's listeners
        self._rto = float(value)

    def connection(
        self,
        mode: Mode,
        *,
        local: tuple[str, int],
        remote: tuple[str, int | None],
        local_mac: str | bytes,
        remote_mac: str | bytes | None,
        window: int | None = None,
        mss: int | None = DEFAULT_MSS,
        isn: int | None = None,
        max_queue: int | None = None,
        reliable: bool | None = None,
        wscale: int | None = None,
        sack: bool = False,
        timestamps: bool | None = None,
    ) -> Connection:
        """Create an emulated connection.

        CLIENT mode sends its SYN at once; SERVER mode sends nothing until
        :meth:`Connection.wait_open`.  In SERVER mode ``remote`` may have
        port None: the first SYN from the remote address binds it.
        ``remote_mac=None``: a SERVER connection learns it from the peer's
        SYN; a CLIENT one finds it with ARP/NDP in ``wait_open`` and sends its
        SYN then.
        ``window`` (default 65535) is what we advertise, ``mss`` the MSS
        option of our SYN (None: no option), ``isn`` our initial sequence
        number (default: drawn from the engine's random source),
        ``max_queue`` the bound of the receive queue, ``reliable`` whether
        it retransmits what the peer does not acknowledge (default: the
        engine's ``reliable``).

        Options of our SYN (or SYN-ACK, which offers only what the peer's SYN
        offered): ``wscale`` the window scale shift (None: no option; with
        it, ``window`` is in bytes and may exceed 65535), ``sack`` the
        SACK-permitted option (then ACKs carry SACK blocks for data held out
        of order), ``timestamps`` True/False, or None to send them exactly
        when the peer's SYN did (as the old API did).  The emulator honours
        what both sides negotiated: window scaling both ways, timestamps on
        every segment.
        """
        self._check_running("connection")
        if not isinstance(mode, Mode):
            raise UsageError(f"mode must be tcpemu.SERVER or tcpemu.CLIENT, got {mode!r}")
        local_ip, local_port = _endpoint("local", local, port_optional=False)
        remote_ip, remote_port = _endpoint("remote", remote, port_optional=True)
        if local_ip.version != remote_ip.version:
            raise UsageError(f"local {local_ip} and remote {remote_ip} differ in IP version")
        if max_queue is not None:
            _check_int("max_queue", max_queue, 1, 1 << 30)
        if reliable is not None:
            _check_bool("reliable", reliable)
        if isn is not None:
            _check_int("isn", isn, 0, 0xFFFFFFFF)
        raw_local_mac = parse_mac(local_mac)
        raw_remote_mac = parse_mac(remote_mac) if remote_mac is not None else _UNKNOWN_MAC
        if remote_port is None and listen_key(local_ip, local_port) in self._auto:
            raise UsageError(
                f"a listener (engine.listen) takes SYNs to {local_ip}:{local_port} already; "
                "a SERVER connection with remote port None there would never see one"
            )
        core = ConnectionCore(
            mode,
            src_port=local_port,
            dst_port=remote_port,
            isn=self._rng.getrandbits(32) if isn is None else isn,
            window=window,
            mss=mss,
            max_queue=self._max_queue if max_queue is None else max_queue,
            reliable=self.reliable if reliable is None else reliable,
            rto=self.rto,
            wscale=wscale,
            sack=sack,
            timestamps=timestamps,
            ts_start=self._rng.getrandbits(32),
        )
        self._label_seq += 1
        conn = Connection(
            self,
            core,
            local_ip=local_ip,
            remote_ip=remote_ip,
            local_mac=raw_local_mac,
            remote_mac=raw_remote_mac,
            label=f"c{self._label_seq} ",
        )
        if remote_port is None:
            key = listen_key(local_ip, local_port)
            table = self._listeners
        else:
            key = flow_key(remote_ip, remote_port, local_ip, local_port)
            table = self._conns
        if key in table:
            raise UsageError(
                f"a connection for local {local_ip}:{local_port}, remote "
                f"{remote_ip}:{remote_port if remote_port is not None else '*'} exists already"
            )
        self._register(conn, table, key)
        self._maybe_answer(local_ip, conn.local_mac)
        self._update_filter()
        if mode is Mode.CLIENT:
            if remote_mac is None:
                conn._resolve_first = True  # wait_open finds the MAC, then sends the SYN
            else:
                self._send_segment(conn, core.syn(trio.current_time()))
        return conn

    def listen(
        self,
        local: tuple[str, int],
        *,
        local_mac: str | bytes,
        window: int | None = None,
        mss: int | None = DEFAULT_MSS,
        backlog: int = 1024,
        auto_open: bool = True,
        max_queue: int | None = None,
    ) -> Listener:
        """Accept any number of connections on ``local``, as a listening socket does.

        Each SYN from any peer makes a new SERVER connection (its MAC and
        address are taken from the SYN).  ``auto_open=True`` answers the SYN
        at once from the pump (no task switch); ``auto_open=False`` leaves
        that to ``wait_open`` on the connection from :meth:`Listener.accept`.
        At most ``backlog`` connections wait in the listener (handshaking or
        not yet accepted); SYNs beyond that are counted and not answered.
        """
        self._check_running("listen")
        local_ip, local_port = _endpoint("local", local, port_optional=False)
        assert local_port is not None
        key = listen_key(local_ip, local_port)
        if key in self._auto or key in self._listeners:
            raise UsageError(f"something listens on {local_ip}:{local_port} already")
        _check_int("backlog", backlog, 1, 1 << 30)
        _check_bool("auto_open", auto_open)
        if max_queue is not None:
            _check_int("max_queue", max_queue, 1, 1 << 30)
        lst = Listener(
            self,
            local_ip,
            local_port,
            parse_mac(local_mac),
            window=window,
            mss=mss,
            backlog=backlog,
            auto_open=auto_open,
            max_queue=self._max_queue if max_queue is None else max_queue,
        )
        self._auto[key] = lst
        self._addr_refs[local_ip] += 1
        self._maybe_answer(local_ip, lst.local_mac)
        self._update_filter()
        return lst

    def statistics(self) -> EngineStatistics:
        try:
            drops = self._link.kernel_drops()
        except OSError:
            drops = -1
        return EngineStatistics(
            frames_received=self._frames_received,
            frames_sent=self._frames_sent,
            frames_unmatched=self._unmatched,
            malformed=MappingProxyType(dict(self._malformed)),
            kernel_drops=drops,
            connections=len(self._all),
            queue_overflows=sum(c.core.statistics().queue_overflows for c in self._all),
            tx_batches=self._tx_batches,
            frames_truncated=getattr(self._link, "truncated", 0),
            faults=MappingProxyType(dict(self._faults)),
            tx_errors=self._tx_errors,
            neighbour_replies=self._neighbour_replies,
            frames_predicted=self._predicted_count,
            frames_other_host=self._other_host,
            frames_cut=self._frames_cut,
            internal_errors=self._internal_errors,
        )

    @property
    def cut_macs(self) -> frozenset[bytes]:
        """Destination MACs whose frames are dropped instead of sent (see :meth:`cut_path`)."""
        return self._cut

    def cut_path(self, mac: str | bytes) -> None:
        """Cut the path towards ``mac``: every frame this engine would send to that
        destination MAC is dropped, as a broken link loses it.

        Counted in ``frames_cut`` and noted in the sending connection's trace;
        :meth:`restore_path` undoes it.  The lab's ``break_path`` calls this
        where the emulator itself sends in the broken direction.
        """
        raw = parse_mac(mac)
        if raw not in self._cut:
            self._cut = self._cut | {raw}
            self.note(f"path towards {format_mac(raw)} cut: frames to it are dropped")

    def restore_path(self, mac: str | bytes) -> None:
        """Undo :meth:`cut_path`: frames to ``mac`` are sent again."""
        raw = parse_mac(mac)
        if raw in self._cut:
            self._cut = self._cut - {raw}
            self.note(f"path towards {format_mac(raw)} restored")

    def note(self, text: str) -> None:
        """An event line in the trace of every live connection of this engine."""
        if not isinstance(text, str):
            raise UsageError(f"note: text must be a str, got {type(text).__name__}")
        for conn in list(self._all):
            conn._event(text)

    async def aclose(self) -> None:
        """Stop the pump (through open_engine's nursery) and close the link."""
        self._close_now()
        await trio.lowlevel.checkpoint()

    # -------------------------------------------------------------- internal

    def _check_running(self, what: str) -> None:
        if self._closed:
            raise ConnectionClosedError(f"{what}: the engine is closed")
        if self._broken is not None:
            raise EngineBrokenError(f"{what}: the packet pump stopped: {self._broken!r}")

    def _close_now(self) -> None:
        if self._closed:
            return
        self._closed = True
        for conn in list(self._all):
            conn._closed = True
            conn._wake()
        try:
            drops = self._link.kernel_drops()
        except OSError:
            drops = 0
        if drops:
            # frames the kernel could not queue for us: the run did not see everything
            log.warning(
                "%s: the kernel dropped %d frames for this engine (receive buffer full)", self.name, drops
            )
        # wake a pump blocked on the descriptor before it goes away
        trio.lowlevel.notify_closing(self._link.fileno())
        self._link.close()
        if self.capture is not None:
            self.capture.close()

    def _template(
        self, local_mac: bytes, remote_mac: bytes, local_ip: IPAddress, remote_ip: IPAddress
    ) -> FrameTemplate:
        """The header template of a flow; shared by connections between the same
        hosts (a template never changes once made), bounded like a cache."""
        key = (local_mac, remote_mac, local_ip.packed, remote_ip.packed)  # bytes hash faster than addresses
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= 1024:
                self._templates.clear()
            template = self._templates[key] = FrameTemplate(local_mac, remote_mac, local_ip, remote_ip)
        return template

    def _address(self, packed: bytes) -> IPAddress:
        """The address object of packed bytes from a frame, bounded like a cache."""
        addr = self._addresses.get(packed)
        if addr is None:
            if len(self._addresses) >= 1024:
                self._addresses.clear()
            addr = self._addresses[packed] = ipaddress.ip_address(packed)
        return addr

    def _register(self, conn: Connection, table: dict[bytes, Connection], key: bytes) -> None:
        """Make ``conn`` the pump's target for ``key``; the counterpart of :meth:`_unregister`."""
        table[key] = conn
        conn._key = (table, key)
        self._all.add(conn)
        self.recent.append(conn)
        self._addr_refs[conn.local_ip] += 1

    def _unregister(self, conn: Connection) -> None:
        if conn._key is not None:
            table, key = conn._key
            if table.get(key) is conn:
                del table[key]
            conn._key = None
        if conn in self._all:
            self._all.discard(conn)
            self._release_address(conn.local_ip)

    def _release_address(self, addr: IPAddress) -> None:
        refs = self._addr_refs[addr] - 1
        if refs > 0:
            self._addr_refs[addr] = refs
            return  # still in use: the filter stays as it is
        del self._addr_refs[addr]
        if not self._closed:
            self._update_filter()

    def _update_filter(self) -> None:
        addrs = frozenset(self._addr_refs)
        neighbours = frozenset(self._neighbour_macs) | frozenset(self._resolving)
        if (addrs, neighbours) != self._filtered:  # re-attach only when a set changes
            self._link.set_filter(_bpf.tcp_to_addresses(addrs, neighbours))
            self._filtered = (addrs, neighbours)

    def _maybe_answer(self, addr: IPAddress, mac: bytes) -> None:
        answer = self.answer_neighbours
        if answer is None:  # by default: for addresses no host of this namespace owns
            answer = addr not in self._owned
        if answer and addr not in self._neighbour_macs:
            self._neighbour_macs[addr] = mac
            self._update_filter()

    async def resolve(
        self,
        ip: str | IPAddress,
        *,
        local_ip: str | IPAddress,
        local_mac: str | bytes,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> str:
        """The MAC of ``ip``, asked for with ARP (IPv4) or a neighbour solicitation (IPv6)
        sent from ``local_ip``/``local_mac``; ``attempts`` questions ``timeout`` s apart."""
        self._check_running("resolve")
        target, source, mac = _addr(ip, "resolve"), _addr(local_ip, "local_ip"), parse_mac(local_mac)
        _check_timeout("resolve: timeout", timeout, positive=True)
        _check_int("resolve: attempts", attempts, 1, 100)
        if target.version != source.version:
            raise UsageError(f"resolve: {target} and {source} differ in IP version")
        event, answer = trio.Event(), []
        self._resolving[source] = (event, answer)
        self._update_filter()
        try:
            for _ in range(attempts):
                if target.version == 4:
                    frame = neighbour.arp_request(mac, source, target)
                else:
                    frame = neighbour.neighbour_solicitation(mac, source, target)  # type: ignore[arg-type]
                self._transmit([frame])
                with trio.move_on_after(timeout):
                    while True:
                        await event.wait()
                        if answer and answer[0][0] == target:
                            return format_mac(answer[0][1])
                        event = trio.Event()
                        self._resolving[source] = (event, answer)
                        answer.clear()
        finally:
            del self._resolving[source]
            if not self._closed:
                self._update_filter()
        raise TcpemuTimeoutError(
            f"resolve: no answer for {target} after {attempts} questions {timeout} s apart"
        )

    def _neighbour(self, frame: bytes) -> None:
        """An ARP or NDP frame the filter let through: answer it, or take it as an answer."""
        try:
            msg = neighbour.parse_neighbour_untrusted(frame)
        except MalformedFrameError as exc:
            self._malformed[exc.reason] += 1
            return
        if msg is None:
            self._unmatched += 1
            return
        if msg.request:
            mac = self._neighbour_macs.get(msg.target)
            if mac is None:
                self._unmatched += 1
                return
            if msg.target.version == 4:
                reply = neighbour.arp_reply(mac, msg.target, msg.sender_mac, msg.sender_ip)
            else:
                reply = neighbour.neighbour_advertisement(mac, msg.target, msg.sender_mac, msg.sender_ip)  # type: ignore[arg-type]
            self._neighbour_replies += 1
            self._emit(reply)
            return
        for source, (event, answer) in self._resolving.items():
            if source.version == msg.target.version:
                answer.append((msg.target, msg.sender_mac))
                event.set()

    def _payload_room(self, conn: Connection, options: list[TcpOption] | tuple[TcpOption, ...] | None) -> int:
        ip_header = 20 if conn.local_ip.version == 4 else 40
        if options is not None:
            opt_len = len(encode_options(options))
        else:
            # what the core adds by itself: timestamps (12) and SACK blocks (up to 28)
            core = conn.core
            opt_len = (12 if core.ts_enabled and core.peer_ts else 0) + (28 if core.sack_ok else 0)
        return self._link.mtu - ip_header - 20 - opt_len

    def _send_segment(self, conn: Connection, seg: Segment, note: str = "") -> None:
        data = conn._template.build(seg)
        now = trio.current_time()
        if self._cut and conn.remote_mac in self._cut:
            note = f"{note}, path cut: not sent" if note else "path cut: not sent"
        record = _record(now - self._t0, ">", seg, _template_options(data), note)
        conn._trace.append(record)
        if conn.core.events:
            conn._core_events(now)
        if conn.core.reliable:
            self._kick_timers(conn.core.next_deadline())
        faults = conn.faults_out or self.faults_out
        if faults.any:
            action, hold = self._injector.decide(faults)
            if action is not FaultAction.PASS:
                self._faults[f"out-{action.value}"] += 1
                conn._event(f"fault injected: {action.value} of sent seq={seg.seq}")
                if action is FaultAction.DROP:
                    return
                if action is FaultAction.DUPLICATE:
                    self._transmit([data, data])
                    return
                self._hold(hold, OUTBOUND, data, conn)
                return
        self._emit(data)
        if trace_log.isEnabledFor(logging.DEBUG):
            trace_log.debug(conn._format(record))

    def _emit(self, frame: bytes) -> None:
        """Send ``frame``: inside a pump iteration with the others at its end, else at once."""
        if self._outbox is not None:
            self._outbox.append(frame)
        else:
            self._transmit([frame])

    def _transmit(self, frames: list[bytes]) -> None:
        if self._cut:
            kept = [f for f in frames if f[:6] not in self._cut]
            if len(kept) != len(frames):
                self._frames_cut += len(frames) - len(kept)
                if not kept:
                    return
                frames = kept
        if self.capture is not None:
            for frame in frames:
                self.capture.write(frame, OUTBOUND)
        try:
            if len(frames) == 1:
                self._link.send(frames[0])
            else:
                self._link.send_batch(frames)
                self._tx_batches += 1
        except UsageError:
            if not self._background:
                raise  # a test's own call: its error
            # from the pump or the timers there is no caller to tell: count and log
            self._tx_errors += 1
            log.error(
                "%s: a frame did not fit the MTU and was not sent (%d so far)", self.name, self._tx_errors
            )
            return
        except EngineBrokenError as exc:
            self._broken = exc
            for other in list(self._all):
                other._wake()
            raise
        self._frames_sent += len(frames)

    def _dispatch(self, frame: bytes, now: float, replay: bool = False) -> Connection | None:
        if not replay:
            self._frames_received += 1
        fields = predict_untrusted(frame)
        if fields is not None:
            conn = self._conns.get(fields[0])
            if conn is not None:
                if not frame.startswith(conn.local_mac):
                    self._other_host += 1  # for our address, but not to our MAC: a NIC drops it
                    return None
                return self._predicted(conn, fields, frame, now, replay)
        try:
            fkey, lkey, start, end = classify_untrusted(frame)
            conn = self._conns.get(fkey)
            if conn is None:
                conn = self._listeners.get(lkey)
                syn_only = frame[start + 13] & 0x12 == 0x02
                if conn is None and syn_only and lkey in self._auto:
                    listener = self._auto[lkey]
                    if not frame.startswith(listener.local_mac):
                        self._other_host += 1
                        return None
                    conn = listener._spawn(frame, fkey, lkey)
                    if conn is None:
                        return None  # backlog full: counted by the listener
                elif conn is None or not syn_only or fkey[: len(lkey) - 2] != conn.remote_ip.packed:
                    self._unmatched += 1
                    return None
            if not frame.startswith(conn.local_mac):
                self._other_host += 1
                return None
            seg = parse_tcp_untrusted(frame, start, end)
        except MalformedFrameError as exc:
            # ARP and ICMPv6 are "not TCP" to the classifier: the filter only
            # lets neighbour frames for our addresses through, so look there
            # rather than test every TCP frame for them
            if exc.reason in ("not-ip", "not-tcp") and _neighbour_frame(frame):
                self._neighbour(frame)
                return None
            self._malformed[exc.reason] += 1
            log.debug("%s: %s", self.name, exc)
            return None
        if conn.core.dst_port is None:
            # a listener meets its SYN: from now on it is bound to this 4-tuple
            del self._listeners[lkey]
            self._conns[fkey] = conn
            conn._key = (self._conns, fkey)
        return self._deliver(conn, seg, frame, start, now, replay)

    def _predicted(
        self, conn: Connection, fields: PredictedFields, frame: bytes, now: float, replay: bool
    ) -> Connection | None:
        """Header prediction (Van Jacobson's, as BSD and Linux's fast path
        do it): the common segment of a connection with nothing special
        about it goes from its header fields straight to the core; the rest
        is parsed and takes :meth:`_deliver`.  The result is the same."""
        _, seq, ack, flags, window, urgent, options, payload, start, end = fields
        if conn.remote_mac is not _UNKNOWN_MAC and not (conn.faults_in or self.faults_in).any:
            msg = conn.core.receive_predicted(seq, ack, flags, window, urgent, options, payload, now)
            if msg is not None:
                self._predicted_count += 1
                # the record _record makes, from the header's fields: there is no Segment here
                raw_options = frame[start + 20 : end - len(payload)] if options else b""
                record = (now - self._t0, "<", seq, ack, flags, window, raw_options, len(payload), "")
                self._received(conn, msg, record, now)
                if conn._listener is not None:  # the handshake's ACK, most often
                    conn._listener._progress(conn, now)
                if trace_log.isEnabledFor(logging.DEBUG):
                    trace_log.debug(conn._format(record))
                return conn
        return self._deliver(conn, parse_tcp_untrusted(frame, start, end), frame, start, now, replay)

    def _deliver(
        self, conn: Connection, seg: Segment, frame: bytes, start: int, now: float, replay: bool
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
                    self._dispatch(frame, now, replay=True)
                else:
                    self._hold(hold, INBOUND, frame, conn)
                    return None
        core = conn.core
        msg = core.receive(seg, now)
        note = "" if msg.kind is _EXPECTED else msg.kind._value_  # the plain attribute: .value is slow
        if note and msg.kind is _RETRANSMIT and core.is_probe(msg):
            note = "probe"  # keepalive or zero-window probe: at snd_una - 1 on purpose
        if msg.flags & _RST:
            accepted = any(e.kind == "rst-accepted" for e in core.events)
            note = f"{note}, RST accepted" if accepted else f"{note}, RST ignored"
            note = note.lstrip(", ")
        record = _record(now - self._t0, "<", seg, frame[start + 20 : start + (seg.data_offset or 20)], note)
        self._received(conn, msg, record, now)
        if conn._listener is not None:
            conn._listener._progress(conn, now)
        if trace_log.isEnabledFor(logging.DEBUG):
            trace_log.debug(conn._format(record))
        return conn

    def _received(self, conn: Connection, msg: Message, record: TraceRecord, now: float) -> None:
        """The engine's part after the core took a segment: trace, the core's events, timers."""
        conn._last_msg = msg
        conn._trace.append(record)
        core = conn.core
        if core.events:  # state moves, a RST taken or ignored, a full queue
            conn._core_events(now)
        if core.reliable:
            self._kick_timers(core.next_deadline())

    def _hold(self, delay: float, direction: int, frame: bytes, conn: Connection) -> None:
        release = trio.current_time() + delay
        heapq.heappush(self._held, (release, next(self._held_seq), direction, frame, conn))
        self._kick_timers(release)

    def _kick_timers(self, deadline: float | None) -> None:
        """Wake the timer task if ``deadline`` comes before the one it sleeps until."""
        if deadline is not None and deadline < self._planned:
            self._timer_wakeup.set()

    def _next_deadline(self) -> float:
        deadline = self._held[0][0] if self._held else math.inf
        for conn in self._all:
            d = conn.core.next_deadline() if conn.core.reliable else None
            if d is not None and d < deadline:
                deadline = d
        return deadline

    async def _timers(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Retransmission timeouts of reliable connections and release of held frames."""
        task_status.started()
        while True:
            self._timer_wakeup = trio.Event()
            self._planned = self._next_deadline()
            with trio.move_on_at(self._planned):
                await self._timer_wakeup.wait()
            self._planned = math.inf  # the deadlines are computed afresh before the next wait
            if self._closed or self._broken is not None:
                return
            now = trio.current_time()
            touched: set[Connection] = set()
            self._background = True
            try:
                self._fire_timers(now, touched)
            finally:
                self._background = False
            for conn in touched:
                conn._wake()

    def _fire_timers(self, now: float, touched: set[Connection]) -> None:
        while self._held and self._held[0][0] <= now:
            _, _, direction, frame, conn = heapq.heappop(self._held)
            if conn._closed:
                continue
            if direction == OUTBOUND:
                self._transmit([frame])
            elif self._dispatch(frame, now, replay=True) is not None:
                touched.add(conn)
        for conn in list(self._all):
            if conn.core.reliable:
                try:
                    for seg in conn.core.handle_timer(now):
                        self._send_segment(conn, seg, "retransmit")  # its event says why
                except EngineBrokenError:
                    raise
                except Exception:
                    self._internal_errors += 1
                    log.exception("%s: the timer of %s failed", self.name, conn)

    async def _pump(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        link = self._link
        fd = link.fileno()
        busy = self._busy_poll
        task_status.started()
        try:
            spin_until = 0.0
            full_run = 0
            while True:
                frames = link.recv_batch(BATCH)
                if not frames:
                    if busy and time.perf_counter() < spin_until:
                        # busy polling: stay awake a little after traffic, so
                        # that the next frame is met without a wakeup
                        await trio.lowlevel.checkpoint()
                        continue
                    await trio.lowlevel.wait_readable(fd)
                    continue
                if busy:
                    spin_until = time.perf_counter() + busy
                if self.capture is not None:
                    self.capture.write_batch(frames, INBOUND)
                now = trio.current_time()
                touched: set[Connection] = set()
                self._outbox = outbox = []
                try:
                    for frame in frames:
                        try:
                            conn = self._dispatch(frame, now)
                        except (EngineBrokenError, trio.Cancelled):
                            raise
                        except Exception:
                            # a defect, or a setting no check caught: this frame is
                            # lost, counted and logged, and every other connection lives on
                            self._internal_errors += 1
                            log.exception("%s: a frame could not be handled and was dropped", self.name)
                            continue
                        if conn is not None:
                            touched.add(conn)
                finally:
                    self._outbox = None
                if outbox:
                    self._background = True
                    try:
                        self._transmit(outbox)
                    finally:
                        self._background = False
                for conn in touched:
                    conn._wake()
                if len(frames) < BATCH:
                    full_run = 0
                elif (full_run := full_run + 1) >= FAIR_BATCHES:
                    full_run = 0
                    await trio.lowlevel.checkpoint()
        except (OSError, trio.ClosedResourceError) as exc:
            if self._closed:
                return
            self._broken = exc
            log.error("%s: packet pump stopped: %s", self.name, exc)
            for conn in list(self._all):
                conn._wake()


@dataclass(slots=True)
class EngineContext:
    """What a test harness hands every engine opened in its context (see :data:`ENGINE_CONTEXT`)."""

    registry: list[Engine] = field(default_factory=list)
    """The engines opened, appended by open_engine (for a failure report)."""
    capture_dir: pathlib.Path | None = None
    """Where engines opened without ``capture=`` write their pcapng (None: no capture)."""


ENGINE_CONTEXT: ContextVar[EngineContext | None] = ContextVar("tcpemu_engine_context", default=None)
"""Set by a harness (the pytest plugin) around a test; trio.run copies the caller's
context, so every task of the test sees it.  No module global is written."""

TEST_REGISTRY: list[Engine] | None = None  # the plugin's old interface, read while it moves over
CAPTURE_DIR: pathlib.Path | None = None
_capture_seq = itertools.count(1)
_OPEN: weakref.WeakSet[Engine] = weakref.WeakSet()
_CLAIMED: set[tuple[str | None, str]] = set()  # links being opened (the open runs in a thread)


def engines_on(netns: str | None, ifname: str) -> list[Engine]:
    """The engines open now in this process on interface ``ifname`` of namespace ``netns``
    (as passed to :func:`open_engine`)."""
    return [e for e in list(_OPEN) if e._where == (netns, ifname) and not e._closed]


def _capture_writer(
    capture: str | os.PathLike[str] | PcapngWriter | None, ifname: str
) -> PcapngWriter | None:
    if isinstance(capture, PcapngWriter):
        return capture
    if capture is None:
        context = ENGINE_CONTEXT.get()
        directory = context.capture_dir if context is not None else CAPTURE_DIR
        if directory is None:
            return None
        capture = directory / f"{ifname}-{next(_capture_seq)}.pcapng"
    return PcapngWriter(capture, ifname=ifname)


def _open_link(ifname: str, netns: str | None, ring: bool) -> FrameLink:
    if ring:
        try:
            return PacketRing(ifname, netns)
        except (UsageError, LabError):
            raise
        except OSError as exc:
            log.warning("%s: no PACKET_MMAP ring (%s); reading with recv()", ifname, exc)
    return PacketLink(ifname, netns)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else group


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


@contextmanager
def _single_exception() -> Iterator[None]:
    """No ExceptionGroup escapes a public context manager when one exception is inside."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner = _unwrap(group)
        if inner is group:
            raise
        raise inner from None


@asynccontextmanager
async def open_engine(
    ifname: str | None = None,
    *,
    netns: str | None = None,
    link: FrameLink | None = None,
    rng: random.Random | None = None,
    seed: int | None = None,
    max_queue: int = 4096,
    ring: bool = True,
    busy_poll: float = 0.0,
    capture: str | os.PathLike[str] | PcapngWriter | None = None,
    trace_depth: int = 1000,
    reliable: bool = False,
    rto: float = 0.2,
    faults_out: Faults | None = None,
    faults_in: Faults | None = None,
    answer_neighbours: bool | None = None,
) -> AsyncIterator[Engine]:
    """Open a packet socket on ``ifname`` (inside namespace ``netns``) and run its pump.

    Frames are read through a PACKET_MMAP ring (``ring=False``: one
    ``recv`` per frame).  ``link`` replaces the packet socket (for example a
    :class:`~tcpemu.MemoryLink`).  ISNs draw from ``rng`` or from
    ``random.Random(seed)``.  On exit the pump stops and the socket closes;
    connections are destroyed without sending anything.
    """
    made_link = link is None
    # every argument checked before anything is opened: a refusal leaves nothing behind
    if ifname is not None and (not isinstance(ifname, str) or not 0 < len(ifname) < 16):
        raise UsageError(f"open_engine: ifname must be an interface name (1..15 chars), got {ifname!r}")
    if netns is not None and not isinstance(netns, str):
        raise UsageError(f"open_engine: netns must be a namespace name, got {netns!r}")
    if rng is not None and not isinstance(rng, random.Random):
        raise UsageError(f"open_engine: rng must be a random.Random, got {rng!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UsageError(f"open_engine: seed must be an int, got {seed!r}")
    _check_int("open_engine: max_queue", max_queue, 1, 1 << 30)
    _check_int("open_engine: trace_depth", trace_depth, 0, 1 << 24)
    _check_timeout("open_engine: busy_poll", busy_poll)
    check_rto(rto)
    for what, flag in (("ring", ring), ("reliable", reliable)):
        _check_bool(f"open_engine: {what}", flag)
    if answer_neighbours is not None:
        _check_bool("open_engine: answer_neighbours", answer_neighbours)
    for what, faults in (("faults_out", faults_out), ("faults_in", faults_in)):
        if faults is not None and not isinstance(faults, Faults):
            raise UsageError(f"open_engine: {what} must be tcpemu.faults.Faults, got {faults!r}")
    if link is None:
        if ifname is None:
            raise UsageError("open_engine needs an interface name (or link=)")
        for other in engines_on(netns, ifname):
            # two pumps on one link would both answer every SYN, with different ISNs
            raise UsageError(
                f"open_engine: an engine is open on {ifname!r} (netns {netns!r}) already ({other!r}); "
                "one engine serves any number of connections and listeners: share that one"
            )
        if (netns, ifname) in _CLAIMED:
            raise UsageError(f"open_engine: an engine is being opened on {ifname!r} (netns {netns!r})")
        _CLAIMED.add((netns, ifname))
        try:
            link = await trio.to_thread.run_sync(_open_link, ifname, netns, ring)
        finally:
            _CLAIMED.discard((netns, ifname))
    if rng is None:
        rng = random.Random(seed)
    writer = _capture_writer(capture, ifname or "link")
    owned: frozenset[IPAddress] = frozenset()
    if answer_neighbours is None and made_link and netns is not None:
        # a host of this namespace answers for its own addresses: leave those to it
        owned = frozenset(await trio.to_thread.run_sync(net.addresses, netns))
    engine = Engine(
        link,
        rng=rng,
        max_queue=max_queue,
        name=ifname or "link",
        busy_poll=busy_poll,
        trace_depth=trace_depth,
        capture=writer,
        reliable=reliable,
        rto=rto,
        faults_out=faults_out,
        faults_in=faults_in,
        answer_neighbours=answer_neighbours,
        owned_addresses=owned,
    )
    context = ENGINE_CONTEXT.get()
    if context is not None:
        context.registry.append(engine)
    elif TEST_REGISTRY is not None:
        TEST_REGISTRY.append(engine)
    if made_link:
        engine._where = (netns, ifname)  # type: ignore[assignment]
        _OPEN.add(engine)
    try:
        engine._update_filter()
        with _single_exception():
            async with trio.open_nursery() as nursery:
                await nursery.start(engine._pump)
                await nursery.start(engine._timers)
                try:
                    yield engine
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        engine._close_now()
