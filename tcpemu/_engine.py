"""The trio engine: one packet pump per interface, its dispatch table and timers.

``open_engine`` owns a nursery that runs the pump.  The pump waits for the
link to be readable, drains a batch of frames, classifies each one at fixed
offsets, hands it to the matching connection's sans-IO core and wakes that
connection's waiters.  It never blocks on a consumer: each core's queue is
bounded and an overflow is counted and logged.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import math
import pathlib
import random
import time
import weakref
from collections import Counter, deque
from contextvars import ContextVar
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import trio

from . import _bpf
from ._args import _check_bool, _check_int, _endpoint
from ._connection import UNKNOWN_MAC as _UNKNOWN_MAC
from ._connection import Connection
from ._errors import (
    ConnectionClosedError,
    EngineBrokenError,
    UsageError,
)
from ._io import L3_MAC, FrameDropped, FrameLink, L3Frames
from ._listener import Listener, ListenerStatistics
from ._receive_path import TAKE_PREDICTED, ReceivePath
from ._responder import NeighbourResponder
from ._timers import Timers
from ._trace import _record, _template_options
from .capture import INBOUND, OUTBOUND, PcapngWriter
from .core import (
    DEFAULT_MSS,
    ConnectionCore,
    Mode,
    SegmentKind,
    _worth_logging,
    check_rto,
)
from .faults import NO_FAULTS, FaultAction, FaultInjector, Faults
from .wire import (
    FrameTemplate,
    IPAddress,
    Segment,
    TcpFlags,
    TcpOption,
    encode_options,
    flow_key,
    format_mac,
    listen_key,
    parse_mac,
    vlan_tag,
)

__all__ = [
    "Engine",
    "Connection",
    "EngineContext",
    "EngineStatistics",
    "Listener",
    "ListenerStatistics",
    "engines_on",
]

log = logging.getLogger("tcpemu.engine")
trace_log = logging.getLogger("tcpemu.trace")

BATCH: Final = 256
_EXPECTED: Final = SegmentKind.EXPECTED  # a global: quicker than the member looked up on its class
_RETRANSMIT: Final = SegmentKind.RETRANSMIT
_RST: Final = TcpFlags.RST


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
    """Frames not sent: too long for the MTU (from the pump or the timers: a test's own call
    raises), or dropped because the device's queue stayed full for a second (ENOBUFS); logged."""
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


class Engine(NeighbourResponder, ReceivePath, Timers):
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
        self._unfiltered = not getattr(link, "filters", True)
        """No kernel filter in front of the link: non-TCP traffic is foreign, not malformed."""
        self._l3 = bool(getattr(link, "l3", False))
        """A link without an Ethernet header (TUN, IP tunnels): no MACs, no ARP/NDP."""
        if self._l3 and not isinstance(link, L3Frames):
            link = L3Frames(link)  # the engine works on Ethernet frames everywhere else
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
        self._take_predicted = TAKE_PREDICTED  # the compiled fast path; None: Python takes every frame
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
        local_mac: str | bytes | None = None,
        remote_mac: str | bytes | None = None,
        window: int | None = None,
        mss: int | None = DEFAULT_MSS,
        isn: int | None = None,
        max_queue: int | None = None,
        reliable: bool | None = None,
        wscale: int | None = None,
        sack: bool = False,
        timestamps: bool | None = None,
        ts_start: int | None = None,
        vlan: int | None = None,
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
        when the peer's SYN did (as the old API did); ``ts_start`` the first
        TSval we send (default: drawn from the engine's random source).  The emulator honours
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
        raw_local_mac, raw_remote_mac = self._macs("connection", local_mac, remote_mac)
        vlan_tag(vlan)  # checks it
        if vlan is not None and (self._l3 or raw_remote_mac is _UNKNOWN_MAC):
            raise UsageError(
                "connection: a VLAN tag needs an Ethernet link and remote_mac (no ARP/NDP across VLANs yet)"
            )
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
            ts_start=self._rng.getrandbits(32) if ts_start is None else ts_start,
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
            vlan=vlan,
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
            if raw_remote_mac is _UNKNOWN_MAC:
                conn._resolve_first = True  # wait_open finds the MAC, then sends the SYN
            else:
                self._send_segment(conn, core.syn(trio.current_time()))
        return conn

    def listen(
        self,
        local: tuple[str, int],
        *,
        local_mac: str | bytes | None = None,
        window: int | None = None,
        mss: int | None = DEFAULT_MSS,
        backlog: int = 1024,
        auto_open: bool = True,
        max_queue: int | None = None,
        vlan: int | None = None,
        wscale: int | None = None,
        sack: bool = False,
        timestamps: bool | None = None,
    ) -> Listener:
        """Accept any number of connections on ``local``, as a listening socket does.

        Each SYN from any peer makes a new SERVER connection (its MAC and
        address are taken from the SYN).  ``auto_open=True`` answers the SYN
        at once from the pump (no task switch); ``auto_open=False`` leaves
        that to ``wait_open`` on the connection from :meth:`Listener.accept`.
        At most ``backlog`` connections wait in the listener (handshaking or
        not yet accepted); SYNs beyond that are counted and not answered.
        ``window``, ``mss``, ``wscale``, ``sack`` and ``timestamps`` are what
        each connection's SYN-ACK offers, as for :meth:`connection` (with
        ``wscale``, ``window`` is in bytes and may exceed 65535).
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
            self._macs("listen", local_mac, None)[0],
            window=window,
            mss=mss,
            backlog=backlog,
            auto_open=auto_open,
            max_queue=self._max_queue if max_queue is None else max_queue,
            vlan=vlan,
            wscale=wscale,
            sack=sack,
            timestamps=timestamps,
        )
        self._auto[key] = lst
        self._addr_refs[local_ip] += 1
        self._maybe_answer(local_ip, lst.local_mac)
        self._update_filter()
        return lst

    def _macs(
        self, what: str, local_mac: str | bytes | None, remote_mac: str | bytes | None
    ) -> tuple[bytes, bytes]:
        """(local, remote) MACs of a new connection: given on Ethernet (the remote one may
        be left to learn), placeholders on a link without Ethernet header."""
        if self._l3:
            if local_mac is not None or remote_mac is not None:
                raise UsageError(
                    f"{what}: {self.name} has no Ethernet header: give no local_mac or remote_mac"
                )
            return L3_MAC, L3_MAC
        if local_mac is None:
            raise UsageError(
                f"{what}: local_mac is needed on an Ethernet link (the emulated host's MAC), got None"
            )
        return parse_mac(local_mac), parse_mac(remote_mac) if remote_mac is not None else _UNKNOWN_MAC

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
        self,
        local_mac: bytes,
        remote_mac: bytes,
        local_ip: IPAddress,
        remote_ip: IPAddress,
        vlan: int | None = None,
    ) -> FrameTemplate:
        """The header template of a flow; shared by connections between the same
        hosts (a template never changes once made), bounded like a cache."""
        key = (local_mac, remote_mac, local_ip.packed, remote_ip.packed, vlan)  # bytes hash faster
        template = self._templates.get(key)
        if template is None:
            if len(self._templates) >= 1024:
                self._templates.clear()
            template = self._templates[key] = FrameTemplate(
                local_mac, remote_mac, local_ip, remote_ip, vlan=vlan
            )
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
            self._link.set_filter(_bpf.tcp_to_addresses(addrs, neighbours, l3=self._l3))
            self._filtered = (addrs, neighbours)

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
                self.capture.write(frame[14:] if self._l3 else frame, OUTBOUND)
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
        except FrameDropped as exc:
            # lost as on a congested wire, for the test's own calls too: counted and logged
            self._tx_errors += exc.count
            self._frames_sent += len(frames) - exc.count
            if _worth_logging(self._tx_errors):
                log.warning("%s (%d frames so far)", exc, self._tx_errors)
            return
        except EngineBrokenError as exc:
            self._broken = exc
            for other in list(self._all):
                other._wake()
            raise
        self._frames_sent += len(frames)

    async def _pump(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        link = self._link
        fd = link.fileno()
        busy = self._busy_poll
        task_status.started()
        try:
            spin_until = 0.0
            full_run = 0
            # the compiled ring walk that takes the plainest frames where they lie (PacketRing only)
            ring_take = getattr(link, "recv_batch_taking", None)
            conns = self._conns
            while True:
                self._trace_debug = trace_log.isEnabledFor(logging.DEBUG)
                # the compiled path takes the plainest in-order frames and stops at the first
                # other one, which the Python path then takes: the order of a flow's frames holds
                fast = self._take_predicted
                if fast is not None and (self._trace_debug or self.faults_in.any):
                    fast = None
                now = trio.current_time()
                touched: set[Connection] = set()
                taken = 0
                if fast is not None and ring_take is not None and self.capture is None:
                    try:
                        frames, taken = ring_take(BATCH, conns, now, self._t0, touched)
                    except Exception as exc:
                        # a defect: the frames taken before it count, the rest of the
                        # batch (that frame too) goes to the Python path
                        taken = getattr(exc, "tcpemu_taken", 0)
                        self._internal_errors += 1
                        log.exception(
                            "%s: the compiled path failed; the Python path takes the batch", self.name
                        )
                        frames, fast = link.recv_batch(BATCH - taken), None
                    self._frames_received += taken
                    self._predicted_count += taken
                else:
                    frames = link.recv_batch(BATCH)
                if not frames and not taken:
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
                    self.capture.write_batch([f[14:] for f in frames] if self._l3 else frames, INBOUND)
                self._outbox = outbox = []
                i, n = 0, len(frames)
                try:
                    while i < n:
                        if fast is not None:
                            try:
                                j = fast(frames, i, conns, now, self._t0, touched)
                            except Exception as exc:
                                # as a defect in the Python path: that frame is lost, counted and
                                # logged; the frames before it were taken, the rest go to Python
                                j = getattr(exc, "tcpemu_index", i)
                                self._frames_received += j + 1 - i
                                self._predicted_count += j - i
                                self._internal_errors += 1
                                log.exception("%s: a frame could not be handled and was dropped", self.name)
                                i, fast = j + 1, None
                                continue
                            if j != i:
                                self._frames_received += j - i
                                self._predicted_count += j - i
                                if j == n:
                                    break
                            i = j
                        frame = frames[i]
                        i += 1
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
                if len(frames) + taken < BATCH:
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

_OPEN: weakref.WeakSet[Engine] = weakref.WeakSet()
_CLAIMED: set[tuple[str | None, str]] = set()  # links being opened (the open runs in a thread)


def engines_on(netns: str | None, ifname: str) -> list[Engine]:
    """The engines open now in this process on interface ``ifname`` of namespace ``netns``
    (as passed to :func:`open_engine`)."""
    return [e for e in list(_OPEN) if e._where == (netns, ifname) and not e._closed]
