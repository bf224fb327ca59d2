"""Soak runs: many emulated connections against kernel sockets, for a while,
with every byte checked, connections closed and reopened, and faults injected.

Each of ``connections`` pairs loops until the time is up: the IUT (a kernel
socket in a fresh lab) connects to the pair's emulated listener, both ends
send ``churn_bytes`` of a seeded pattern that the other end checks byte for
byte, both close, and the pair starts again.  The emulator runs in reliable
mode (it retransmits what the fault injection or the link lost); the kernel
does its own retransmitting.  RSS is sampled while it runs.
"""

from __future__ import annotations

import random
import resource
import socket
from dataclasses import dataclass, field

import trio

from ._engine import Connection, Listener, open_engine
from ._errors import TcpemuError
from .faults import Faults
from .lab import Lab, connect_nowait, open_lab

__all__ = ["SoakStats", "SoakResult", "run_soak", "pattern"]

BASE_PORT = 20000
STEP_TIMEOUT = 60.0  # one connection's whole exchange


def pattern(seed: int, pair: int, generation: int, direction: str, n: int) -> bytes:
    """The bytes one direction of one connection carries: both ends can compute them."""
    return random.Random(f"{seed}/{pair}/{generation}/{direction}").randbytes(n)


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
    rss_peak_after_warmup: int

    @property
    def rss_growth(self) -> float:
        """Peak RSS after warm-up over RSS at the end of warm-up, minus one."""
        return self.rss_peak_after_warmup / self.rss_after_warmup - 1 if self.rss_after_warmup else 0.0

    @property
    def passed(self) -> bool:
        return not self.mismatches and not self.errors and self.closed > 0 and self.rss_growth < 0.05


async def _iut_send(sock: trio.socket.SocketType, data: bytes, stats: SoakStats) -> None:
    view = memoryview(data)
    while view:
        n = await sock.send(view[:65536])
        view = view[n:]
        stats.bytes_to_emulator += n
    sock.shutdown(socket.SHUT_WR)


async def _iut_recv(sock: trio.socket.SocketType, expected: bytes, stats: SoakStats, where: str) -> None:
    got = 0
    while True:
        chunk = await sock.recv(65536)
        if not chunk:
            break
        if chunk != expected[got : got + len(chunk)]:
            stats.mismatches += 1
            stats.errors.append(f"{where}: the IUT received wrong bytes at offset {got}")
            return
        got += len(chunk)
        stats.bytes_to_iut += len(chunk)
    if got != len(expected):
        stats.errors.append(f"{where}: the IUT received {got} of {len(expected)} bytes before EOF")


async def _emu_recv(conn: Connection, expected: bytes, stats: SoakStats, where: str) -> None:
    got = 0
    while not conn.fin_got:
        chunk = await conn.recv_data(idle=10)
        if chunk != expected[got : got + len(chunk)]:
            stats.mismatches += 1
            stats.errors.append(f"{where}: the emulator received wrong bytes at offset {got}")
            return
        got += len(chunk)
    if got != len(expected):
        stats.errors.append(f"{where}: the emulator received {got} of {len(expected)} bytes before FIN")


async def _emu_send(conn: Connection, data: bytes) -> None:
    await conn.send_data(data)
    await conn.wait_until(lambda c: c.core.unacked_bytes() == 0, what="all data acknowledged")
    await conn.send_fin()


async def _one_connection(
    lab: Lab, listener: Listener, pair: int, generation: int, seed: int, size: int, stats: SoakStats
) -> None:
    where = f"pair {pair} connection {generation}"
    up = pattern(seed, pair, generation, "up", size)
    down = pattern(seed, pair, generation, "down", size)
    iut = await lab.iut.socket()
    conn: Connection | None = None
    try:
        with trio.fail_after(STEP_TIMEOUT):
            connect_nowait(iut, (str(lab.tst.ip), listener.local_port))
            conn = await listener.accept()
            await trio.lowlevel.wait_writable(iut)
            err = iut.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise TcpemuError(f"{where}: the IUT's connect() failed: errno {err}")
            stats.open += 1
            stats.opened += 1
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_iut_send, iut, up, stats)
                    nursery.start_soon(_iut_recv, iut, down, stats, where)
                    nursery.start_soon(_emu_recv, conn, up, stats, where)
                    nursery.start_soon(_emu_send, conn, down)
            finally:
                stats.open -= 1
        stats.closed += 1
    finally:
        iut.close()
        if conn is not None:
            st = conn.statistics()
            stats.retransmits_seen += st.retransmits_seen
            stats.retransmits_sent += st.retransmits_sent
            await conn.aclose()


async def _pair(
    lab: Lab, listener: Listener, pair: int, seed: int, size: int, deadline: float, stats: SoakStats
) -> None:
    generation = 0
    while trio.current_time() < deadline:
        try:
            await _one_connection(lab, listener, pair, generation, seed, size, stats)
        except (TcpemuError, OSError, trio.TooSlowError) as exc:
            stats.errors.append(f"pair {pair} connection {generation}: {type(exc).__name__}: {exc}")
        except BaseExceptionGroup as group:
            stats.errors.append(f"pair {pair} connection {generation}: {group!r}")
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
) -> SoakResult:
    """Run a soak in a fresh lab; ``stats`` (if given) is updated live."""
    if connections < 1 or duration <= 0 or churn_bytes < 1:
        raise TcpemuError("a soak needs connections >= 1, duration > 0 and churn_bytes >= 1")
    stats = stats if stats is not None else SoakStats()
    async with (
        open_lab(rng=random.Random(seed)) as lab,
        open_engine(
            lab.tst.ifname,
            netns=lab.tst.netns,
            rng=random.Random(seed),
            reliable=True,
            faults_out=faults_out,
            faults_in=faults_in,
            trace_depth=32,
        ) as engine,
    ):
        listeners = [
            engine.listen((str(lab.tst.ip), BASE_PORT + i), local_mac=lab.alien_mac, backlog=4)
            for i in range(connections)
        ]
        stats.started = trio.current_time()
        deadline = stats.started + duration
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_sample_rss, stats, rss_interval)
            async with trio.open_nursery() as pairs:
                for i, lst in enumerate(listeners):
                    pairs.start_soon(_pair, lab, lst, i, seed, churn_bytes, deadline, stats)
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - stats.started
        es = engine.statistics()
    after = [r for t, r in stats.rss if t >= warmup * duration]
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
    )
