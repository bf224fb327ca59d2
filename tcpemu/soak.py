"""Soak runs: many emulated connections against kernel sockets, for a while,
with every byte checked, connections closed and reopened, and faults injected.

Each of ``connections`` pairs loops until the time is up: the IUT (a kernel
socket in a fresh lab) connects to the pair's emulated listener, both ends
send ``churn_bytes`` of a seeded pattern that the other end checks byte for
byte, both close, and the pair starts again.  The emulator runs in reliable
mode (it retransmits what the fault injection or the link lost); the kernel
does its own retransmitting.  RSS is sampled while it runs.

Memory per connection stays small whatever ``churn_bytes`` is: the pattern
is made block by block where it is sent and again where it is checked
(:class:`Pattern`, which keeps no bytes between calls), the emulator's window
and the bytes it keeps unacknowledged shrink as pairs are added
(:func:`emu_window`), no task keeps a chunk while it waits (the IUT's bytes
are made once its socket has room, what arrived is checked where the
segments brought it and dropped before the next wait), and each connection's
trace keeps :data:`TRACE_DEPTH` records.  docs/soak.md has the figures.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import resource
import socket
from dataclasses import dataclass, field
from typing import Any

import trio

from ._engine import Connection, Listener
from ._errors import TcpemuError, TcpemuTimeoutError, UsageError
from ._open import open_engine
from .faults import Faults
from .lab import Lab, connect_nowait, open_lab
from .tcpinfo import tcp_state

__all__ = ["SoakStats", "SoakResult", "Pattern", "run_soak", "pattern", "emu_window", "engine_options"]

BASE_PORT = 20000
STALL_TIMEOUT = 60.0
"""By default, a connection fails when no byte of it moved (and no step finished) for this long."""
EXCHANGE_TIMEOUT = 900.0
"""The most one connection's whole exchange may take, however slowly it progresses."""
BLOCK = 1024
"""The pattern is made in blocks of this many bytes, each from a hash of its key and index."""
CHUNK = 4096
"""Bytes an IUT socket is given or asked for at a time (the emulator sends a segment's worth at
a time); made or received just before they are used and dropped before the next wait."""
RING_BUDGET = 8192 * 1448
"""Bytes that all pairs' IUT sockets together may have in flight towards the engine: half of
its receive ring's 16,384 frames of data, the rest left for ACKs and SYNs."""


def emu_window(connections: int) -> int:
    """The window the emulator advertises, and the most it keeps unacknowledged, in a soak of
    ``connections`` pairs: 64 KiB (a full unscaled window: faster recovery from losses) up to
    180 pairs, then a share of :data:`RING_BUDGET` (12 KiB at 1,000 pairs) so that every
    IUT's window fits in the ring at once, and the retransmission store, the largest thing a
    soak connection holds, stays small; never below 4 KiB."""
    return max(4096, min(65535, RING_BUDGET // max(connections, 1)))


TRACE_DEPTH = 8
"""Segments and events each soak connection's trace keeps (``open_engine(trace_depth=)``): a
stalled connection's error shows them.  About 130 bytes each, so a few, not the engine's 1,000."""

MAX_OPENING = 32
"""Connections opening (handshake and first bytes) at once: a thousand pairs starting together
would fill the receive ring with their SYNs and first windows of data."""


class Pattern:
    """The seeded bytes of one direction of one soak connection, made on demand.

    Block ``i`` is SHAKE-128 of the key ``seed/pair/generation/direction`` and
    ``i``; the sender reads the stream with :meth:`read` and the checker
    compares what arrived with :meth:`matches`.  No block is kept between
    calls: a thousand pairs' four patterns would hold 4 KiB each, and making
    again the block a segment ended in costs a hash of 1 KiB (microseconds).
    """

    __slots__ = ("_key", "offset", "size")

    def __init__(self, seed: int, pair: int, generation: int, direction: str, size: int) -> None:
        if size < 0:
            raise UsageError(f"a pattern's size must be >= 0 bytes, got {size}")
        self._key = f"{seed}/{pair}/{generation}/{direction}/".encode()
        self.size = size
        self.offset = 0

    @property
    def remaining(self) -> int:
        return self.size - self.offset

    def _block(self, index: int) -> bytes:
        return hashlib.shake_128(self._key + index.to_bytes(8, "big")).digest(BLOCK)

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream (fewer at its end)."""
        n = min(n, self.remaining)
        out = bytearray(n)  # its final size at once: no copy, no spare capacity
        done = 0
        while done < n:
            index, start = divmod(self.offset, BLOCK)
            part = min(n - done, BLOCK - start)
            out[done : done + part] = memoryview(self._block(index))[start : start + part]
            self.offset += part
            done += part
        return bytes(out)

    def matches(self, data: bytes | memoryview) -> bool:
        """Whether ``data`` is the next ``len(data)`` bytes of the stream (which it then passes)."""
        if len(data) > self.remaining:
            return False
        view = memoryview(data)
        while view:
            index, start = divmod(self.offset, BLOCK)
            part = min(len(view), BLOCK - start)
            if memoryview(self._block(index))[start : start + part] != view[:part]:
                return False
            self.offset += part
            view = view[part:]
        return True

    def rewind(self, n: int) -> None:
        """Step back ``n`` bytes (read but not sent): they are made again by the next :meth:`read`."""
        if not 0 <= n <= self.offset:
            raise UsageError(f"a pattern can rewind 0 to {self.offset} bytes, got {n}")
        self.offset -= n


def pattern(seed: int, pair: int, generation: int, direction: str, n: int) -> bytes:
    """The bytes one direction of one connection carries, whole (the soak streams them: :class:`Pattern`)."""
    return Pattern(seed, pair, generation, direction, n).read(n)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


@dataclass
class SoakStats:
    """Live counters of a running soak (read them while it runs)."""

    started: float = 0.0
    open: int = 0
    opened: int = 0
    closed: int = 0
    bytes_to_iut: int = 0
    bytes_to_emulator: int = 0
    mismatches: int = 0
    retransmits_seen: int = 0
    retransmits_sent: int = 0
    errors: list[str] = field(default_factory=list)
    rss: list[tuple[float, int]] = field(default_factory=list)
    pairs_settled: int = 0
    """Pairs whose first connection ended (closed or failed)."""
    settled_at: float | None = None
    """Seconds from the start until every pair's first connection ended: from then on every
    pair holds its steady share of memory (the end of the warm-up, unless that is later)."""


@dataclass(frozen=True)
class SoakResult:
    duration: float
    connections: int
    opened: int
    closed: int
    bytes_to_iut: int
    bytes_to_emulator: int
    mismatches: int
    errors: tuple[str, ...]
    retransmits_seen: int
    retransmits_sent: int
    faults: dict[str, int]
    kernel_drops: int
    rss_after_warmup: int
    """RSS at the end of the warm-up; 0 when the warm-up did not end before the run (not judged)."""
    rss_peak_after_warmup: int
    rss_before: int = 0
    """RSS before the lab and the engine were opened (the engine's receive ring alone maps 32 MiB)."""
    interrupted: bool = False
    """The run was stopped before its duration (``stop`` was set): the figures are partial."""

    @property
    def rss_growth(self) -> float:
        """Peak RSS after warm-up over RSS at the end of warm-up, minus one."""
        return self.rss_peak_after_warmup / self.rss_after_warmup - 1 if self.rss_after_warmup else 0.0

    @property
    def passed(self) -> bool:
        return (
            not self.interrupted
            and not self.mismatches
            and not self.errors
            and self.closed > 0
            and self.rss_growth < 0.05
        )


class _Exchange:
    """One soak connection's steps in progress, so that a timeout names the slow one and what
    it waited for; every step that moves bytes pushes the stall deadline back."""

    def __init__(self, where: str, scope: trio.CancelScope, stall: float, hard_deadline: float) -> None:
        self.where = where
        self.scope = scope
        self.stall = stall
        self.hard_deadline = hard_deadline
        self.waiting: dict[str, str] = {}
        self.iut: trio.socket.SocketType | None = None
        self.listener: Listener | None = None
        self.conn: Connection | None = None
        self.emu_sent = False
        """The emulator's data and FIN are sent and acknowledged."""
        self.drain: trio.CancelScope | None = None
        """The emulator's receiver dropping the ACKs queued after the IUT's FIN, until ``emu_sent``."""

    def step(self, name: str, waits_for: str) -> None:
        """Step ``name`` now waits for ``waits_for``; counts as progress."""
        self.waiting[name] = waits_for
        self._progress()

    def done(self, name: str) -> None:
        self.waiting.pop(name, None)
        self._progress()

    def _progress(self) -> None:
        self.scope.deadline = min(trio.current_time() + self.stall, self.hard_deadline)

    def timeout_error(self) -> TcpemuTimeoutError:
        bound = (
            f"the exchange bound of {EXCHANGE_TIMEOUT:.0f} s"
            if trio.current_time() >= self.hard_deadline
            else f"{self.stall:g} s without progress"
        )
        steps = "; ".join(f"{name}: waiting for {what}" for name, what in self.waiting.items())
        states = []
        if self.iut is not None:
            try:
                states.append(f"IUT socket {tcp_state(self.iut).name}")
            except OSError as exc:
                states.append(f"IUT socket state unreadable ({exc})")
        if self.listener is not None and self.conn is None:
            ls = self.listener.statistics()
            states.append(
                f"listener: {ls.syns} SYNs seen, {ls.waiting} connections waiting, {ls.accepted} accepted"
            )
        if self.conn is not None:
            st = self.conn.statistics()
            states.append(
                f"emulator {self.conn.state.name}, {self.conn.core.unacked_bytes()} bytes unacknowledged, "
                f"{st.retransmits_sent} retransmitted, {st.retransmits_seen} retransmits seen"
            )
        trace = self.conn.trace() if self.conn is not None else []
        return TcpemuTimeoutError(
            f"{self.where}: {bound}; {steps or 'no step was waiting'}"
            + (f" ({', '.join(states)})" if states else "")
            + (
                f"; the emulator's last {len(trace)} segments and events: " + " | ".join(trace)
                if trace
                else ""
            )
        )


async def _iut_send(sock: trio.socket.SocketType, data: Pattern, stats: SoakStats, ex: _Exchange) -> None:
    name = "IUT send"
    while data.remaining:
        ex.step(name, f"room in the IUT's send buffer ({data.offset} of {data.size} bytes sent)")
        # The bytes are made when they are written, and written at once (trio's send() would
        # hold them for a scheduling round); what the socket did not take is made again next
        # time: a pair waiting for room (the usual state) holds no chunk.
        chunk = data.read(CHUNK)
        try:
            n = os.write(sock.fileno(), chunk)
        except BlockingIOError:
            n = 0
        data.rewind(len(chunk) - n)
        full = n < len(chunk)
        del chunk
        stats.bytes_to_emulator += n
        if full:
            await trio.lowlevel.wait_writable(sock)
        else:
            await trio.lowlevel.checkpoint()  # a full buffer is found by writing, not by epoll
    sock.shutdown(socket.SHUT_WR)
    ex.done(name)


async def _iut_recv(sock: trio.socket.SocketType, expected: Pattern, stats: SoakStats, ex: _Exchange) -> None:
    name = "IUT receive"
    while True:
        ex.step(name, f"the emulator's data and FIN ({expected.offset} of {expected.size} bytes received)")
        chunk = await sock.recv(CHUNK)
        if not chunk:
            break
        at, n = expected.offset, len(chunk)
        ok = expected.matches(chunk)
        del chunk  # not kept while the next one is awaited
        if not ok:
            stats.mismatches += 1
            stats.errors.append(f"{ex.where}: the IUT received wrong bytes at offset {at}")
            ex.done(name)
            return
        stats.bytes_to_iut += n
    if expected.remaining:
        stats.errors.append(
            f"{ex.where}: the IUT received {expected.offset} of {expected.size} bytes before EOF"
        )
    ex.done(name)


async def _emu_read(conn: Connection) -> tuple[list[bytes], bool]:
    """The in-order bytes that arrived, as the segments brought them (waiting for some, or
    for FIN), and whether the FIN came with them, ACKed as ``recv_data`` would (a duplicate
    ACK for a retransmitted or out-of-order segment too).  Neither gathered as ``recv_data``
    gathers the whole stream, nor joined: the checker walks the segments' own bytes."""
    core = conn.core
    await conn.wait_until(
        lambda c: c.core.stream_available() > 0 or c.fin_got or c.rst_got or c.core.should_ack(),
        what="data, FIN or a segment to answer",
    )
    # FIN before the read, with no checkpoint between: if it is in, every byte before it is too
    # (the ACK below lets the pump run, and the FIN may arrive then, after more bytes)
    fin = core.fin_got
    pieces = core.read_stream_pieces()
    if core.should_ack():
        await conn.send_ack()
    return pieces, fin


async def _emu_recv(conn: Connection, expected: Pattern, stats: SoakStats, ex: _Exchange) -> None:
    name = "emulator receive"
    while True:
        ex.step(name, f"the IUT's data and FIN ({expected.offset} of {expected.size} bytes received)")
        if conn.rst_got:
            stats.errors.append(f"{ex.where}: the IUT reset the connection after {expected.offset} bytes")
            ex.done(name)
            return
        pieces, fin = await _emu_read(conn)
        at = expected.offset
        ok = all(expected.matches(piece) for piece in pieces)
        del pieces  # not kept while the next ones are awaited
        if not ok:
            stats.mismatches += 1
            stats.errors.append(f"{ex.where}: the emulator received wrong bytes at offset {at}")
            ex.done(name)
            return
        if fin:
            if expected.remaining:
                stats.errors.append(
                    f"{ex.where}: the emulator received {expected.offset} of {expected.size} bytes before FIN"
                )
            break
    ex.done(name)
    # Once the IUT's FIN is in and its bytes read, nobody reads the receive queue any more, and
    # the IUT's ACKs of what we still send would pile up in it (thousands per connection): drop
    # them until our sending is done.  Nothing can join the stream after the FIN, so nothing is
    # lost.  This task does it rather than one more task per connection.
    if ex.emu_sent:
        return
    with trio.CancelScope() as ex.drain:
        while True:
            await conn.wait_until(lambda c: c.core.pending() >= 8, what="ACKs queued after the FIN")
            conn.core.read_stream_pieces()


async def _emu_send(conn: Connection, data: Pattern, ex: _Exchange, in_flight: int) -> None:
    name = "emulator send"
    # CHUNK bytes between waits for the IUT's ACKs (a wake-up each, not one a segment), handed
    # to send_data a segment's worth at a time: it keeps what it is given until its last
    # segment is out (a scheduling round each), and the retransmission store has its own copy.
    core = conn.core
    # the payload of one segment: the peer's MSS less the options each segment carries (as the
    # engine reckons them); a piece one byte larger would go as two segments
    seg = min(core.peer_mss or 536, in_flight) - (12 if core.ts_enabled and core.peer_ts else 0)
    seg -= 28 if core.sack_ok else 0
    burst = min(CHUNK, in_flight)
    while data.remaining:
        ex.step(name, f"the IUT's window ({data.offset} of {data.size} bytes sent)")
        end = min(data.offset + burst, data.size)
        while data.offset < end:
            await conn.send_data(data.read(min(seg, end - data.offset)))
        room = in_flight - min(burst, data.remaining)
        if conn.core.unacked_bytes() > room:
            ex.step(name, f"the IUT's ACKs ({conn.core.unacked_bytes()} bytes unacknowledged)")
            await conn.wait_until(lambda c, room=room: c.core.unacked_bytes() <= room, what="the IUT's ACKs")
    ex.step(name, "the IUT's ACK of all data")
    await conn.wait_until(lambda c: c.core.unacked_bytes() == 0, what="all data acknowledged")
    ex.step(name, "the IUT's ACK of our FIN")
    await conn.send_fin()
    ex.done(name)
    ex.emu_sent = True
    if ex.drain is not None:
        ex.drain.cancel()


async def _one_connection(
    lab: Lab,
    listener: Listener,
    pair: int,
    generation: int,
    seed: int,
    size: int,
    stats: SoakStats,
    opening: trio.Semaphore,
    stall: float,
    window: int,
) -> None:
    where = f"pair {pair} connection {generation}"
    now = trio.current_time()
    iut = await lab.iut.socket()
    conn: Connection | None = None
    try:
        with trio.CancelScope(deadline=now + stall) as scope:
            ex = _Exchange(where, scope, stall, now + EXCHANGE_TIMEOUT)
            ex.iut, ex.listener = iut, listener
            async with opening:
                ex.step(
                    "open",
                    f"a connection from the emulated listener on port {listener.local_port} "
                    "(the IUT's SYN, our SYN-ACK, the IUT's ACK)",
                )
                connect_nowait(iut, (str(lab.tst.ip), listener.local_port))
                conn = ex.conn = await listener.accept()
                ex.step("open", "the IUT's connect() to complete (the emulator's SYN-ACK or the IUT's ACK)")
                await trio.lowlevel.wait_writable(iut)
                err = iut.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise TcpemuError(f"{where}: the IUT's connect() failed: errno {err}")
                ex.done("open")
            stats.open += 1
            stats.opened += 1
            try:
                async with trio.open_nursery() as nursery:
                    for task, end, direction in (
                        (_iut_send, iut, "up"),
                        (_iut_recv, iut, "down"),
                        (_emu_recv, conn, "up"),
                    ):
                        nursery.start_soon(
                            task, end, Pattern(seed, pair, generation, direction, size), stats, ex
                        )
                    down = Pattern(seed, pair, generation, "down", size)
                    nursery.start_soon(_emu_send, conn, down, ex, window)
            finally:
                stats.open -= 1
        if scope.cancelled_caught:
            raise ex.timeout_error()
        stats.closed += 1
    finally:
        iut.close()
        if conn is not None:
            st = conn.statistics()
            stats.retransmits_seen += st.retransmits_seen
            stats.retransmits_sent += st.retransmits_sent
            await conn.aclose()


def engine_options(
    *, seed: int, rto: float | None = None, faults_out: Faults | None = None, faults_in: Faults | None = None
) -> dict[str, Any]:
    """What a soak passes to :func:`~tcpemu.open_engine` besides the interface."""
    return {
        "rng": random.Random(seed),
        "reliable": True,
        # Measured at 1,000 pairs with 1% of every fault: 0.2 s moved 3.9 MB/s each way (16% of
        # segments sent twice, mostly for nothing: the round trip under that load is seconds),
        # 3.3 s (about that round trip) 2.9 MB/s: the fixed timeout stays at the default.
        **({} if rto is None else {"rto": rto}),
        "faults_out": faults_out,
        "faults_in": faults_in,
        "trace_depth": TRACE_DEPTH,
    }


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


async def _pair(
    lab: Lab,
    listener: Listener,
    pair: int,
    seed: int,
    size: int,
    deadline: float,
    stats: SoakStats,
    opening: trio.Semaphore,
    stall: float,
    pairs: int,
    window: int,
) -> None:
    generation = 0
    while trio.current_time() < deadline:
        if generation == 1:
            stats.pairs_settled += 1
            if stats.pairs_settled == pairs:
                stats.settled_at = trio.current_time() - stats.started
        try:
            await _one_connection(lab, listener, pair, generation, seed, size, stats, opening, stall, window)
        except TcpemuTimeoutError as exc:
            stats.errors.append(str(exc))  # it names the pair, the connection and the step
        except (TcpemuError, OSError) as exc:
            stats.errors.append(f"pair {pair} connection {generation}: {type(exc).__name__}: {exc}")
        except BaseExceptionGroup as group:
            if group.subgroup(lambda e: not isinstance(e, TcpemuError | OSError)) is not None:
                raise  # a cancellation or a bug: not the IUT's doing
            stats.errors.append(f"pair {pair} connection {generation}: {_describe(group)}")
        generation += 1


async def _sample_rss(stats: SoakStats, interval: float) -> None:
    while True:
        stats.rss.append((trio.current_time() - stats.started, rss_bytes()))
        await trio.sleep(interval)  # a sampling period, not a synchronisation


async def run_soak(
    *,
    connections: int = 200,
    duration: float = 60.0,
    seed: int = 0,
    churn_bytes: int = 256 * 1024,
    faults_out: Faults | None = None,
    faults_in: Faults | None = None,
    stats: SoakStats | None = None,
    rss_interval: float = 1.0,
    warmup: float = 0.25,
    stop: trio.Event | None = None,
    stall_timeout: float = STALL_TIMEOUT,
    rto: float | None = None,
    window: int | None = None,
) -> SoakResult:
    """Run a soak in a fresh lab; ``stats`` (if given) is updated live.

    A connection fails when none of its bytes moved for ``stall_timeout``
    seconds; the error names the pair, the connection, what each of its
    unfinished steps waited for, and the emulator's last segments.  ``rto``
    is the emulator's retransmission timeout (default: the engine's).
    ``window`` is the window the emulator advertises and the most it keeps
    unacknowledged (default: :func:`emu_window` of ``connections``; a run of
    fewer pairs given the window of more measures the memory each pair holds
    at that load).  Setting ``stop`` ends the run early: the connections in
    progress are abandoned, the lab is removed, and the result
    (``interrupted=True``) holds what was done until then.
    """
    for name, value, allowed in (
        ("connections", connections, connections >= 1),
        ("duration", duration, duration > 0),
        ("churn_bytes", churn_bytes, churn_bytes >= 1),
        ("rss_interval", rss_interval, rss_interval > 0),
        ("warmup", warmup, 0 <= warmup < 1),
        ("stall_timeout", stall_timeout, stall_timeout > 0),
        ("rto", rto, rto is None or rto > 0),
        ("window", window, window is None or 1024 <= window <= 65535),
    ):
        if not allowed:
            raise UsageError(
                f"run_soak: {name}={value!r} is out of range; connections >= 1, duration > 0 s, "
                "churn_bytes >= 1, rss_interval > 0 s, 0 <= warmup < 1, stall_timeout > 0 s, "
                "rto > 0 s or None, 1024 <= window <= 65535 bytes or None"
            )
    if connections > 40000:
        raise UsageError(
            f"run_soak: connections={connections} exceeds the 40000 listener ports from {BASE_PORT}"
        )
    stats = stats if stats is not None else SoakStats()
    rss_before = rss_bytes()
    interrupted = False
    async with (
        open_lab(rng=random.Random(seed)) as lab,
        open_engine(
            lab.tst.ifname,
            netns=lab.tst.netns,
            **engine_options(seed=seed, rto=rto, faults_out=faults_out, faults_in=faults_in),
        ) as engine,
    ):
        window = emu_window(connections) if window is None else window
        listeners = [
            engine.listen((str(lab.tst.ip), BASE_PORT + i), local_mac=lab.alien_mac, backlog=4, window=window)
            for i in range(connections)
        ]
        opening = trio.Semaphore(MAX_OPENING)
        stats.started = trio.current_time()
        deadline = stats.started + duration
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sample_rss, stats, rss_interval)
            async with trio.open_nursery() as pairs:
                if stop is not None:

                    async def stopper() -> None:
                        nonlocal interrupted
                        await stop.wait()
                        interrupted = True
                        pairs.cancel_scope.cancel()

                    nursery.start_soon(stopper)
                for i, lst in enumerate(listeners):
                    pairs.start_soon(
                        _pair,
                        lab,
                        lst,
                        i,
                        seed,
                        churn_bytes,
                        deadline,
                        stats,
                        opening,
                        stall_timeout,
                        connections,
                        window,
                    )
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - stats.started
        es = engine.statistics()
    # warm-up: the first quarter (``warmup``), or until every pair's first connection ended if
    # that is later (a thousand pairs take a while to open); never ended, RSS is not judged
    warm_end = max(warmup * duration, stats.settled_at if stats.settled_at is not None else math.inf)
    after = [r for t, r in stats.rss if t >= warm_end]
    base = after[0] if after else 0
    return SoakResult(
        duration=elapsed,
        connections=connections,
        opened=stats.opened,
        closed=stats.closed,
        bytes_to_iut=stats.bytes_to_iut,
        bytes_to_emulator=stats.bytes_to_emulator,
        mismatches=stats.mismatches,
        errors=tuple(stats.errors),
        retransmits_seen=stats.retransmits_seen,
        retransmits_sent=stats.retransmits_sent,
        faults=dict(es.faults),
        kernel_drops=es.kernel_drops,
        rss_after_warmup=base,
        rss_peak_after_warmup=max(after, default=0),
        rss_before=rss_before,
        interrupted=interrupted,
    )
