"""The async connection API: one emulated TCP connection of an engine.

``open_engine`` owns a nursery that runs the pump.  The pump waits for the
link to be readable, drains a batch of frames, classifies each one at fixed
offsets, hands it to the matching connection's sans-IO core and wakes that
connection's waiters.  It never blocks on a consumer: each core's queue is
bounded and an overflow is counted and logged.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Final, TypeVar

import trio

from . import notation
from ._args import _check_bool, _check_int, _check_options, _check_timeout, _deadline
from ._errors import (
    ConnectionBrokenError,
    ConnectionClosedError,
    MalformedFrameError,
    TcpemuTimeoutError,
    UsageError,
)
from ._segment_spec import SegmentSpec
from ._trace import TraceRecord, _record, format_fields
from .core import (
    AUTO,
    DEFAULT_MSS,
    Auto,
    ConnectionCore,
    ConnectionStatistics,
    Message,
    Mode,
    Quiet,
    TcpState,
)
from .faults import Faults
from .wire import (
    ETH_HLEN,
    IPAddress,
    Segment,
    TcpFlags,
    TcpOption,
    decode_options_untrusted,
    encode_options,
    format_mac,
    parse_mac,
)

if TYPE_CHECKING:
    from ._engine import Engine
    from ._listener import Listener

__all__ = ["Connection", "SegmentSpec", "UNKNOWN_MAC"]

trace_log = logging.getLogger("tcpemu.trace")
T = TypeVar("T")
UNKNOWN_MAC: Final = bytes(6)  # remote_mac to be learnt from the peer's first frame


def _check_text(what: str, text: object) -> None:
    if not isinstance(text, str):
        raise UsageError(f"{what}: a segment in packetdrill's notation is a str, got {text!r}")


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
        vlan: int | None = None,
    ) -> None:
        self._engine = engine
        self.core = core
        self.local_ip = local_ip
        self.remote_ip = remote_ip
        self.local_mac = local_mac
        self.remote_mac = remote_mac
        self.label = label
        self.vlan = vlan
        """The 802.1Q VLAN ID this connection's frames carry and must arrive with (None: untagged)."""
        self._template = engine._template(local_mac, remote_mac, local_ip, remote_ip, vlan)
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
        self._template = self._engine._template(self.local_mac, mac, self.local_ip, self.remote_ip, self.vlan)
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
        # the segments' pieces, joined once at the end: each byte is copied once (a bytearray
        # grown to the whole transfer is copied again as it grows, and once more into the result)
        chunks: list[bytes] = []
        before = core.statistics().segments_received
        try:
            with trio.move_on_at(overall) as overall_scope:
                while True:
                    chunks += core.read_stream_pieces()
                    if ack and core.should_ack():
                        self._transmit(core.ack_now(trio.current_time()))
                    if core.fin_got:
                        return b"".join(chunks)
                    if core.rst_got:
                        got = sum(map(len, chunks))
                        raise ConnectionBrokenError(
                            f"recv_data: the peer reset the connection after {got} bytes"
                        )
                    with trio.move_on_after(idle) as idle_scope:
                        self._check_usable("recv_data")
                        await self._changed.wait()
                    if idle_scope.cancelled_caught:
                        break
        except BaseException:
            core.unread(b"".join(chunks))  # cancelled, reset or closed: the next read gets them
            raise
        if chunks:
            return b"".join(chunks)
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

    # --------------------------------------------------- packetdrill notation

    async def expect(self, text: str, within: float | None = 1.0, *, ack: bool = False) -> Message:
        """The peer's next segment, checked against ``text`` in packetdrill's notation
        (``"F. 1:1(0) ack 1"``; omitted window and options match anything).

        Returns the Message.  A mismatch (or nothing within ``within`` seconds)
        raises :class:`~tcpemu.notation.SegmentMismatch`, an ``AssertionError``
        showing expected and got in the same notation and the recent trace.
        Nothing is ACKed unless ``ack=True``.
        """
        _check_text("expect", text)
        if within is not None:
            _check_timeout("expect: within", within)
        _check_bool("expect: ack", ack)
        return await notation.expect(self, text, within, ack=ack)

    async def expect_nothing(self, for_: float) -> None:
        """Fail with the segment if the peer sends anything within ``for_`` seconds."""
        _check_timeout("expect_nothing: for_", for_)
        await notation.expect_nothing(self, for_)

    async def send(self, text: str, payload: bytes | None = None) -> Segment:
        """Send exactly the segment ``text`` describes in packetdrill's notation
        (``"P. 1:1001(1000) ack 1 win 511 <nop,nop,TS val 100 ecr 0>"``: relative
        numbers, the options as written, the raw window), with ``payload`` or
        that many filler bytes; the numbering moves as :meth:`send_msg`'s does."""
        _check_text("send", text)
        if payload is not None and not isinstance(payload, (bytes, bytearray, memoryview)):
            raise UsageError(f"send: payload must be bytes or None, got {type(payload).__name__}")
        return await notation.send(self, text, payload)

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
            src_port=core.src_port,
            dst_port=core.dst_port or 0,
            src_mac=self.local_mac,
            dst_mac=self.remote_mac,
            src_ip=self.local_ip,
            dst_ip=self.remote_ip,
            vlan=self.vlan,
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
        built = [(spec.encode(), spec.as_segment()) for spec in listed]
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
