"""tcpemu benchmarks: each measures tcpemu and its comparison in the same run,
on the same veth pair of a fresh lab, several repetitions, medians and spread.

    python benchmarks/run.py [--quick] [--repeat N] [--no-scapy] [--out DIR] [--only NAME ...]

Writes DIR/results.json and DIR/results.md (DIR defaults to benchmarks/results)
and prints the markdown table.  Needs root (namespaces and raw sockets).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

import tcpemu
from tcpemu import SERVER, TcpFlags, TcpOption
from tcpemu._accel import SPEEDUPS
from tcpemu._io import PacketLink, PacketRing
from tcpemu._netns import run_in_netns
from tcpemu.capture import PcapngWriter
from tcpemu.lab import Lab, open_lab
from tcpemu.soak import rss_bytes
from tcpemu.wire import Frame, Segment, build_frame, parse_mac

HERE = pathlib.Path(__file__).resolve().parent
PEERS = [sys.executable, str(HERE / "_peers.py")]


@dataclass
class Size:
    pump_frames: int = 100_000
    scapy_frames: int = 20_000
    connects: int = 2_000
    scapy_connects: int = 300
    bulk_bytes: int = 100_000_000
    scale_conns: int = 10_000
    scale100k_conns: int = 100_000
    per_process: int = 15_000  # sockets one IUT process holds in the scale benchmarks
    send_segments: int = 20_000


QUICK = Size(
    pump_frames=5_000,
    scapy_frames=500,
    connects=100,
    scapy_connects=30,
    bulk_bytes=2_000_000,
    scale_conns=300,
    scale100k_conns=2_000,
    per_process=1_000,  # so that the smoke run spreads over processes as the full one does
    send_segments=500,
)


@dataclass
class Result:
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "unit": self.unit,
            "runs": self.runs,
            "median": self.median,
            "min": min(self.runs, default=float("nan")),
            "max": max(self.runs, default=float("nan")),
            "note": self.note,
        }


def peer(netns: str, *args: object, stdin: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*PEERS, netns, *map(str, args)],
        stdout=subprocess.PIPE,
        stdin=stdin,
        text=True,
    )


def ack_frames(lab: Lab, n: int, *, syn: bool = True, timestamps: bool = False) -> list[bytes]:
    """The IUT's SYN (seq 1000) to the tester's port 20000, then n in-order pure
    ACKs (seq 1001).  syn=False: the ACKs alone, so that every one is
    unexpected (no SYN seen) and takes the full parse path.  timestamps:
    every segment carries NOP NOP TS, as Linux sends them, the value moving
    every 100 segments (a flow of 100,000 segments/s on Linux's 1 kHz TS
    clock)."""
    # to the alien MAC, as the IUT addresses the emulator: an engine takes only frames to its MAC
    iut_mac, tst_mac = parse_mac(lab.iut.mac), parse_mac(lab.alien_mac)
    first = [Segment(40000, 20000, 1000, 0, TcpFlags.SYN, 500)] if syn else []

    def options(i: int) -> tuple[TcpOption, ...]:
        return (TcpOption(1), TcpOption(1), TcpOption.timestamps(1 + i // 100, 0)) if timestamps else ()

    acks = [
        Segment(40000, 20000, 1001, i, TcpFlags.ACK, 500, options=options(i)) for i in range(n - len(first))
    ]
    return [build_frame(Frame(iut_mac, tst_mac, lab.iut.ip, lab.tst.ip, seg)) for seg in first + acks]


def ack_receiver(engine: tcpemu.Engine, lab: Lab, n: int) -> tcpemu.Connection:
    """The connection that takes ack_frames(lab, n), with room to queue every one."""
    return engine.connection(
        SERVER,
        local=(str(lab.tst.ip), 20000),
        remote=(str(lab.iut.ip), 40000),
        local_mac=lab.alien_mac,
        remote_mac=lab.iut.mac,
        max_queue=n + 10,
    )


# --------------------------------------------------------------------------- 1


async def bench_pump(lab: Lab, size: Size, use_scapy: bool) -> list[Result]:
    n = size.pump_frames
    frames = ack_frames(lab, n)
    filt = tcpemu._bpf.tcp_to_addresses([lab.tst.ip])
    emu = Result("pump: tcpemu classify+dispatch (ring)", "frames/s")
    emu.note = "in-order segments: header prediction"
    captured = Result("pump: tcpemu with pcapng capture", "frames/s")
    stamped = Result("pump: tcpemu, in-order with timestamps", "frames/s")
    stamped.note = "NOP NOP TS on every segment, as Linux sends them"
    full = Result("pump: tcpemu, every segment unexpected", "frames/s")
    full.note = "no SYN seen: classify, full parse, core"
    bare = Result("pump: bare recv_into loop", "frames/s")
    scapy_r = Result("pump: scapy sniff", "frames/s")
    # bare loop: the socket is filled first, then drained
    link = await trio.to_thread.run_sync(lambda: PacketLink(lab.tst.ifname, lab.tst.netns, rcvbuf=1 << 29))
    link.set_filter(filt)
    await lab.iut.send_frames(frames)
    buf = bytearray(2048)
    sock = link._sock
    t0 = time.perf_counter()
    got = 0
    while got < n:
        try:
            sock.recv_into(buf)
            got += 1
        except BlockingIOError:
            break
    bare.runs.append(got / (time.perf_counter() - t0))
    if got != n:
        bare.note = f"only {got} of {n} frames queued (kernel drops {link.kernel_drops()})"
    link.close()

    runs = (
        (emu, None, frames),
        (captured, os.path.join(tempfile.mkdtemp(), "pump.pcapng"), frames),
        (full, None, ack_frames(lab, n, syn=False)),
        (stamped, None, ack_frames(lab, n, timestamps=True)),
    )
    for result, capture, load in runs:
        ring = await trio.to_thread.run_sync(
            lambda: PacketRing(lab.tst.ifname, lab.tst.netns, frame_size=256, frame_nr=n + 1024)
        )
        ring.set_filter(filt)
        await lab.iut.send_frames(load)
        drops = ring.kernel_drops()
        # The engine is put together by hand so that the connection exists
        # before the pump takes its first frame from the filled ring.
        writer = PcapngWriter(capture, ifname=lab.tst.ifname) if capture else None
        engine = tcpemu.Engine(ring, rng=random.Random(1), capture=writer)
        conn = ack_receiver(engine, lab, n)
        async with trio.open_nursery() as nursery:
            t0 = time.perf_counter()
            await nursery.start(engine._pump)
            await conn.wait_until(
                lambda c, want=n - drops: c.statistics().segments_received >= want, timeout=60
            )
            result.runs.append((n - drops) / (time.perf_counter() - t0))
            nursery.cancel_scope.cancel()
        st = conn.statistics()
        engine._close_now()
        if (st.unexpected_seen == 0) != (result is not full):
            raise RuntimeError(f"pump: {st.unexpected_seen} unexpected segments in the {result.name!r} run")
        if capture:
            os.unlink(capture)
        if drops:
            result.note = f"kernel dropped {drops} while filling"
    live_rows = await pump_live(lab, n)
    if use_scapy:
        scapy_r.runs.append(await scapy_sniff_rate(lab, size.scapy_frames))
    tcpemu_rows = [emu, captured, stamped, full, bare, *live_rows]
    return [*tcpemu_rows, scapy_r] if use_scapy else tcpemu_rows


async def pump_live(lab: Lab, n: int) -> list[Result]:
    """The in-order ACKs sent by another process as fast as it can while an
    engine opened with the defaults (open_engine's ring) takes them: the
    generator's rate, the pump's, and what the kernel dropped for a full ring."""
    gen = Result("pump live: generator rate", "frames/s")
    gen.note = "another process, 64 frames a sendmmsg()"
    took = Result("pump live: tcpemu, frames taken while sent", "frames/s")
    drops = Result("pump live: kernel drops", "frames")
    drops.note = f"of {n} frames, open_engine's default ring"
    path = os.path.join(tempfile.mkdtemp(), "frames")
    with open(path, "wb") as f:
        for frame in ack_frames(lab, n):
            f.write(len(frame).to_bytes(2, "big") + frame)
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=1) as engine:
        conn = ack_receiver(engine, lab, n)
        flood = peer(lab.iut.netns, "flood", lab.iut.ifname, path, stdin=subprocess.PIPE)
        assert flood.stdout is not None and flood.stdin is not None
        if (await trio.to_thread.run_sync(flood.stdout.readline)).strip() != "ready":
            raise RuntimeError("pump live: the generator did not start")
        before = engine.statistics().kernel_drops
        t0 = time.perf_counter()
        flood.stdin.write("go\n")
        flood.stdin.flush()

        def all_seen(c: tcpemu.Connection) -> bool:
            return c.statistics().segments_received + engine.statistics().kernel_drops - before >= n

        await conn.wait_until(all_seen, timeout=60)
        dt = time.perf_counter() - t0
        out = json.loads(await collect(flood))
        lost = engine.statistics().kernel_drops - before
        gen.runs.append(out["frames"] / out["seconds"])
        took.runs.append(conn.statistics().segments_received / dt)
        drops.runs.append(lost)
    os.unlink(path)
    return [gen, took, drops]


async def scapy_sniff_rate(lab: Lab, n: int) -> float:
    """scapy's sniff draining a socket filled first, as the bare loop does.

    Filling while sniff reads made the figure depend on how many frames a
    small socket buffer dropped (runs of 800 and 8,000 frames/s alike).
    """
    from scapy.all import conf, sniff

    def listen() -> object:
        sock = conf.L2listen(iface=lab.tst.ifname)
        sock.ins.setsockopt(socket.SOL_SOCKET, 33, 1 << 27)  # SO_RCVBUFFORCE: room for all n
        return sock

    sock = await trio.to_thread.run_sync(run_in_netns, lab.tst.netns, listen)
    got = 0

    def count(_packet: object) -> None:
        nonlocal got
        got += 1

    def drain() -> float:
        t0 = time.perf_counter()
        sniff(opened_socket=sock, prn=count, store=False, count=n, timeout=30)
        return time.perf_counter() - t0

    try:
        await lab.iut.send_frames(ack_frames(lab, n, syn=False))
        elapsed = await trio.to_thread.run_sync(drain)
    finally:
        sock.close()
    if got < n:
        raise RuntimeError(f"scapy sniff: {got} of {n} frames read within 30 s")
    return got / elapsed


# --------------------------------------------------------------------------- 2

BUSY_POLL = 0.001  # seconds the low-latency pump stays awake after a frame


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def collect(proc: subprocess.Popen[str]) -> str:
    out, _ = await trio.to_thread.run_sync(proc.communicate)
    if proc.returncode:
        raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
    return out


async def bench_latency(lab: Lab, size: Size, use_scapy: bool) -> list[Result]:
    tst_ip = str(lab.tst.ip)
    res = {
        k: Result(f"connect() {k}", "us")
        for k in (
            "emulated p50",
            "emulated p99",
            f"emulated busy_poll {BUSY_POLL * 1e6:.0f} us p50",
            f"emulated busy_poll {BUSY_POLL * 1e6:.0f} us p99",
            "kernel p50",
            "kernel p99",
            "minimal Python responder p50",
            "minimal Python responder p99",
            "scapy p50",
            "scapy p99",
        )
    }
    cpu = {
        busy: Result(
            f"connect() emulated{f' busy_poll {busy * 1e6:.0f} us' if busy else ''}: CPU per connect", "us"
        )
        for busy in (0.0, BUSY_POLL)
    }

    async def emulated(port: int, busy: float) -> list[float]:
        """connect() latencies to engine.listen(), and the CPU time this process took per connect."""
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=2, busy_poll=busy) as engine:
            listener = engine.listen((tst_ip, port), local_mac=lab.alien_mac, backlog=size.connects + 10)

            async def drain() -> None:
                while True:
                    conn = await listener.accept()
                    await conn.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(drain)
                used = time.process_time()
                lat = json.loads(await collect(peer(lab.iut.netns, "connect", tst_ip, port, size.connects)))
                cpu[busy].runs.append((time.process_time() - used) / size.connects * 1e6)
                nursery.cancel_scope.cancel()
        return lat

    lat = await emulated(20000, 0.0)
    res["emulated p50"].runs.append(percentile(lat, 0.5) / 1000)
    res["emulated p99"].runs.append(percentile(lat, 0.99) / 1000)
    # the opt-in low-latency pump: it keeps reading the ring for BUSY_POLL
    # after each frame instead of sleeping until the next one wakes it
    lat = await emulated(20004, BUSY_POLL)
    res[f"emulated busy_poll {BUSY_POLL * 1e6:.0f} us p50"].runs.append(percentile(lat, 0.5) / 1000)
    res[f"emulated busy_poll {BUSY_POLL * 1e6:.0f} us p99"].runs.append(percentile(lat, 0.99) / 1000)

    await lab.use_kernel_tester()  # the tester's own kernel answers now
    try:
        srv = await lab.tst.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await srv.bind((tst_ip, 20001))
        srv.listen(4096)
        lat = json.loads(await collect(peer(lab.iut.netns, "connect", tst_ip, 20001, size.connects)))
        srv.close()
    finally:
        await lab.add_alien_neighbour()
    res["kernel p50"].runs.append(percentile(lat, 0.5) / 1000)
    res["kernel p99"].runs.append(percentile(lat, 0.99) / 1000)

    async def against_responder(name: str, port: int, count: int, *args: object) -> None:
        """connect() latencies to a responder process in the tester namespace."""
        responder = peer(lab.tst.netns, f"{name}-responder", lab.tst.ifname, port, count, *args)
        assert responder.stdout is not None
        ready = await trio.to_thread.run_sync(responder.stdout.readline)
        if ready.strip() != "ready":
            raise RuntimeError(f"{name} responder did not start: {ready!r}")
        lat = json.loads(await collect(peer(lab.iut.netns, "connect", tst_ip, port, count)))
        await collect(responder)
        label = {"raw": "minimal Python responder", "scapy": "scapy"}[name]
        res[f"{label} p50"].runs.append(percentile(lat, 0.5) / 1000)
        res[f"{label} p99"].runs.append(percentile(lat, 0.99) / 1000)

    # The floor for any responder written in Python on this machine: a bare
    # loop answering SYNs (the IUT's connect() still waits for one wakeup
    # of another process, which the kernel's own listener never needs).
    await against_responder("raw", 20003, size.connects, lab.alien_mac)
    if use_scapy:
        await against_responder("scapy", 20002, size.scapy_connects)
    return [r for r in [*res.values(), *cpu.values()] if r.runs]


# --------------------------------------------------------------------------- 3


async def bench_bulk(lab: Lab, size: Size) -> list[Result]:
    """The kernel sends size.bulk_bytes; every receiver is timed from the first
    byte it read to the last, so that neither the start of two processes nor a
    handshake counts against either side."""
    tst_ip = str(lab.tst.ip)
    emu = Result("bulk: kernel -> tcpemu recv_data", "MB/s")
    emu.note = "listen() defaults: 64 KiB window, no window scale"
    scaled = Result("bulk: kernel -> tcpemu recv_data, 4 MiB window", "MB/s")
    scaled.note = "connection(window=4 MiB, wscale=7) + wait_open"
    busy = Result(f"bulk: kernel -> tcpemu recv_data, busy_poll {BUSY_POLL * 1e6:.0f} us", "MB/s")
    busy.note = "listen() defaults, open_engine(busy_poll=...)"
    kern = Result("bulk: kernel -> kernel", "MB/s")

    async def receive(conn: tcpemu.Connection, sender: subprocess.Popen[str], result: Result) -> None:
        # the clock starts when the first byte is in the stream, as the sink's does
        await conn.wait_until(lambda c: c.core.stream_available() > 0 or c.fin_got, timeout=30)
        t0 = time.perf_counter()
        got = 0
        while not conn.fin_got:
            got += len(await conn.recv_data(idle=2, timeout=120))
        dt = time.perf_counter() - t0
        await conn.send_fin(timeout=10)
        await collect(sender)
        if got != size.bulk_bytes:
            raise RuntimeError(f"bulk: received {got} of {size.bulk_bytes} bytes")
        result.runs.append(got / dt / 1e6)
        st = conn.statistics()
        result.note += (
            f"; queue overflows {st.queue_overflows}, retransmits seen {st.retransmits_seen}, "
            f"{st.segments_received} segments drew {st.segments_sent} ACKs"
        )

    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=3) as engine:
        listener = engine.listen((tst_ip, 20000), local_mac=lab.alien_mac)
        sender = peer(lab.iut.netns, "bulk", tst_ip, 20000, size.bulk_bytes)
        await receive(await listener.accept(timeout=10), sender, emu)
        # the lever for bulk: a window the sender does not wait on (the
        # kernel's own receiver grows its window to megabytes)
        conn = engine.connection(
            SERVER,
            local=(tst_ip, 20001),
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,
            window=4 << 20,
            wscale=7,
            max_queue=1 << 16,
        )
        sender = peer(lab.iut.netns, "bulk", tst_ip, 20001, size.bulk_bytes)
        await conn.wait_open(timeout=10)
        await receive(conn, sender, scaled)
    # the opt-in low-latency pump: it reads the ring again instead of sleeping
    # until the next frame wakes it, so that it takes more frames a batch
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=3, busy_poll=BUSY_POLL) as engine:
        listener = engine.listen((tst_ip, 20003), local_mac=lab.alien_mac)
        sender = peer(lab.iut.netns, "bulk", tst_ip, 20003, size.bulk_bytes)
        await receive(await listener.accept(timeout=10), sender, busy)

    await lab.use_kernel_tester()
    try:
        sink = peer(lab.tst.netns, "sink", tst_ip, 20002)
        assert sink.stdout is not None
        await trio.to_thread.run_sync(sink.stdout.readline)
        await collect(peer(lab.iut.netns, "bulk", tst_ip, 20002, size.bulk_bytes))
        out = json.loads(await collect(sink))
    finally:
        await lab.add_alien_neighbour()
    if out["bytes"] != size.bulk_bytes:
        raise RuntimeError(f"bulk: the kernel sink read {out['bytes']} of {size.bulk_bytes} bytes")
    kern.runs.append(out["bytes"] / (out["last"] - out["first"]) / 1e6)
    return [emu, scaled, busy, kern]


# --------------------------------------------------------------------------- 4


async def bench_scale(
    lab: Lab, size: Size, n: int | None = None, ports: int = 1, label: str = "scale", freeze: int = 0
) -> list[Result]:
    """n connections from the IUT held at once; ``freeze``: gc.freeze() after
    every that many accepted (0: the collector as it is)."""
    n = size.scale_conns if n is None else n
    tst_ip = str(lab.tst.ip)
    rate = Result(f"{label}: handshakes", "handshakes/s", note=f"{n} connections opened at once")
    per_conn = Result(f"{label}: RSS per connection held", "bytes", note=f"{n} held")
    teardown = Result(f"{label}: destroy every connection", "s", note=f"{n} connections")
    gc.collect()
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=4) as engine:
        listeners = [
            engine.listen((tst_ip, 20000 + i), local_mac=lab.alien_mac, backlog=n + 100) for i in range(ports)
        ]
        conns: list[tcpemu.Connection] = []
        if n > 20_000:
            # more connections than the default ephemeral range holds per
            # destination port and the two ports together: widen it
            await lab.iut.sysctl("net.ipv4.ip_local_port_range", "1024 65535")
        base = rss_bytes()
        port_list = ",".join(str(20000 + i) for i in range(ports))
        # one process holds at most size.per_process sockets: a process may
        # have too few descriptors for more, and no right to raise its limit
        k = -(-n // size.per_process)
        procs = [
            peer(lab.iut.netns, "many", tst_ip, port_list, n // k + (i < n % k), stdin=subprocess.PIPE)
            for i in range(k)
        ]
        for proc in procs:
            assert proc.stdout is not None and proc.stdin is not None
            if (await trio.to_thread.run_sync(proc.stdout.readline)).strip() != "ready":
                raise RuntimeError("scale: an IUT process did not start")
        t0 = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()

        async def accept_all(listener: tcpemu.Listener) -> None:
            while len(conns) < n:
                conns.append(await listener.accept())
                if freeze and len(conns) % freeze == 0:
                    # what docs/performance.md tells a soak to do: the
                    # connections held so far are never walked again
                    gc.freeze()
                if len(conns) >= n:
                    nursery.cancel_scope.cancel()

        with trio.move_on_after(120):
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(accept_all, listener)
        dt = time.perf_counter() - t0
        held = len(conns)
        if held < n:
            # a measurement all the same (the rate of those that finished), said plainly
            rate.note += (
                f"; ONLY {held} IN 120 s: {[lst.statistics() for lst in listeners]}; "
                f"{engine.statistics().kernel_drops} kernel drops"
            )
        else:
            connected = 0
            for proc in procs:
                assert proc.stdout is not None
                connected += json.loads(await trio.to_thread.run_sync(proc.stdout.readline))["connected"]
            if connected != n:
                raise RuntimeError(f"scale: the IUT connected {connected} of {n}")
        gc.collect()
        per_conn.runs.append((rss_bytes() - base) / max(held, 1))
        rate.runs.append(held / dt)
        rate.note += f"; {k} IUT processes, kernel drops {engine.statistics().kernel_drops}"
        t0 = time.perf_counter()
        for c in conns:
            await c.aclose()
        teardown.runs.append(time.perf_counter() - t0)
        for proc in procs:
            assert proc.stdin is not None
            if held < n:
                proc.kill()
            else:
                proc.stdin.close()
            await trio.to_thread.run_sync(proc.wait)
        conns.clear()
    return [rate, per_conn, teardown]


# Listening ports for 100,000 connections: the IUT's connect() looks for a free
# ephemeral port by walking the range, which grows slow (seconds a thousand
# connects) when most of the range is taken towards one port.
PORTS_100K = 4


async def bench_scale100k(lab: Lab, size: Size) -> list[Result]:
    """size.scale100k_conns connections held at once, over PORTS_100K listening
    ports; the collector left as it is."""
    return await bench_scale(lab, size, size.scale100k_conns, ports=PORTS_100K, label="scale100k")


async def bench_scale100k_freeze(lab: Lab, size: Size) -> list[Result]:
    """The same with gc.freeze() after every 5% of the connections, as
    docs/performance.md tells a soak to do: with 100,000 alive, one full
    collection stalls the pump for about a second."""
    n = size.scale100k_conns
    return await bench_scale(lab, size, n, ports=PORTS_100K, label="scale100k, gc.freeze()", freeze=n // 20)


# --------------------------------------------------------------------------- 5


async def bench_send(lab: Lab, size: Size) -> list[Result]:
    tst_ip = str(lab.tst.ip)
    raw = Result("send_msg 1 KiB: back to back", "segments/s")
    paced = Result("send_msg 1 KiB: within the IUT's window, all delivered", "segments/s")
    payload = bytes(1024)
    k = size.send_segments
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=5) as engine:
        # every duplicate draws a duplicate ACK from the IUT: room for all of them, unread
        listener = engine.listen((tst_ip, 20000), local_mac=lab.alien_mac, max_queue=4 * k + 100)
        iut = await lab.iut.socket()
        tcpemu.lab.connect_nowait(iut, (tst_ip, 20000))
        conn = await listener.accept(timeout=5)

        got = 0

        async def reader() -> None:
            nonlocal got
            while True:
                data = await iut.recv(1 << 16)
                if not data:
                    return
                got += len(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            # back to back: the same segment k times (explicit seq, nothing
            # advances); the IUT takes the first and drops the duplicates
            t0 = time.perf_counter()
            for _ in range(k):
                await conn.send_msg(payload, seq=conn.next_seqn)
            raw.runs.append(k / (time.perf_counter() - t0))
            conn.update_sent_seq(len(payload))

            t0 = time.perf_counter()
            for _ in range(k):
                await conn.wait_until(
                    lambda c: (c.next_seqn - (c.last_ackn_got or 0)) % 2**32 + 1024 <= (c.last_win_got or 0),
                    timeout=10,
                    what="room in the IUT's window",
                )
                await conn.send_msg(payload)
            await conn.wait_until(lambda c: c.last_ackn_got == c.next_seqn, timeout=10, what="all acked")
            paced.runs.append(k / (time.perf_counter() - t0))
            nursery.cancel_scope.cancel()
        if got != (k + 1) * 1024:
            raise RuntimeError(f"send: the IUT read {got} of {(k + 1) * 1024} bytes")
        iut.close()
    return [raw, paced]


# ---------------------------------------------------------------------- main

BUSY = f"busy_poll {BUSY_POLL * 1e6:.0f} us"
PYTHON_PATH_ROW = " [Python path]"  # the suffix of the rows of pump-python and bulk-python
TARGETS = [
    # (label, numerator, denominator, operator, bound); the targets of DESIGN.md
    (
        "pump vs bare recv_into",
        "pump: tcpemu classify+dispatch (ring)",
        "pump: bare recv_into loop",
        ">=",
        1.0,
    ),
    (
        "pump with capture / without (overhead <= 20%)",
        "pump: tcpemu with pcapng capture",
        "pump: tcpemu classify+dispatch (ring)",
        ">=",
        0.8,
    ),
    ("pump vs scapy sniff", "pump: tcpemu classify+dispatch (ring)", "pump: scapy sniff", ">=", 100.0),
    (
        "pump vs bare recv_into, the Python path alone",
        "pump: tcpemu classify+dispatch (ring)" + PYTHON_PATH_ROW,
        "pump: bare recv_into loop" + PYTHON_PATH_ROW,
        ">=",
        1.0,
    ),
    ("connect p50 emulated / kernel", "connect() emulated p50", "connect() kernel p50", "<=", 3.0),
    ("connect p99 emulated / kernel", "connect() emulated p99", "connect() kernel p99", "<=", 2.0),
    (
        f"connect p50 emulated, {BUSY} (opt-in) / kernel",
        f"connect() emulated {BUSY} p50",
        "connect() kernel p50",
        "<=",
        3.0,
    ),
    (
        f"connect p99 emulated, {BUSY} (opt-in) / kernel",
        f"connect() emulated {BUSY} p99",
        "connect() kernel p99",
        "<=",
        2.0,
    ),
    (
        "connect p99 minimal Python responder / kernel (the floor, no target)",
        "connect() minimal Python responder p99",
        "connect() kernel p99",
        "<=",
        2.0,
    ),
    ("bulk tcpemu / kernel", "bulk: kernel -> tcpemu recv_data", "bulk: kernel -> kernel", ">=", 0.5),
    (
        f"bulk tcpemu, {BUSY} (opt-in) / kernel",
        f"bulk: kernel -> tcpemu recv_data, {BUSY}",
        "bulk: kernel -> kernel",
        ">=",
        0.5,
    ),
    (
        "bulk tcpemu, 4 MiB window / kernel",
        "bulk: kernel -> tcpemu recv_data, 4 MiB window",
        "bulk: kernel -> kernel",
        ">=",
        0.5,
    ),
    (
        "bulk tcpemu / kernel, the Python path alone",
        "bulk: kernel -> tcpemu recv_data" + PYTHON_PATH_ROW,
        "bulk: kernel -> kernel" + PYTHON_PATH_ROW,
        ">=",
        0.5,
    ),
]
# (label, row name prefix, operator, bound): absolute targets
ABSOLUTE = [
    ("pump live: kernel drops at the generator's rate", "pump live: kernel drops", "<=", 0.0),
    ("handshakes/s (10,000 connections)", "scale: handshakes", ">=", 5000.0),
    ("RSS per connection, bytes (10,000 held)", "scale: RSS per connection held", "<=", 8192.0),
    ("handshakes/s (100,000 connections)", "scale100k: handshakes", ">=", 5000.0),
    ("RSS per connection, bytes (100,000 held)", "scale100k: RSS per connection held", "<=", 8192.0),
    ("handshakes/s (100,000 connections, gc.freeze())", "scale100k, gc.freeze(): handshakes", ">=", 5000.0),
    (
        "RSS per connection, bytes (100,000 held, gc.freeze())",
        "scale100k, gc.freeze(): RSS per connection held",
        "<=",
        8192.0,
    ),
]


def _met(value: float, op: str, bound: float) -> bool:
    return value >= bound if op == ">=" else value <= bound


def evaluate(results: dict[str, Result]) -> list[dict[str, object]]:
    """Each target's median ratio and the spread of the ratios run by run (each
    run measured both sides in one process, so its two figures pair up)."""
    rows: list[dict[str, object]] = []
    for label, num, den, op, bound in TARGETS:
        if num in results and den in results and results[den].median:
            ratio = results[num].median / results[den].median
            pairs = [a / b for a, b in zip(results[num].runs, results[den].runs, strict=False) if b]
            rows.append(
                {
                    "target": label,
                    "ratio": ratio,
                    "min": min(pairs, default=float("nan")),
                    "max": max(pairs, default=float("nan")),
                    "bound": f"{op} {bound:g}",
                    "met": _met(ratio, op, bound),
                }
            )
    for label, name, op, bound in ABSOLUTE:
        if name in results and results[name].runs:
            r = results[name]
            rows.append(
                {
                    "target": label,
                    "ratio": r.median,
                    "min": min(r.runs),
                    "max": max(r.runs),
                    "bound": f"{op} {bound:g}",
                    "met": _met(r.median, op, bound),
                }
            )
    return rows


def markdown(results: list[Result], targets: list[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        f"tcpemu benchmarks: {meta['when']}, {meta['machine']}, kernel {meta['kernel']}, "
        f"{meta['repeat']} runs each{' (quick)' if meta['quick'] else ''}, load average before "
        f"{meta['load']}; the compiled part (tcpemu/_speedups.c) "
        f"{'loaded' if meta['compiled'] else 'NOT loaded: every row is the Python path'}",
        "",
        "| benchmark | median | min | max | unit | note |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        d = r.as_dict()
        lines.append(
            f"| {r.name} | {d['median']:,.1f} | {d['min']:,.1f} | {d['max']:,.1f} | {r.unit} | {r.note} |"
        )
    lines += [
        "",
        "| target | measured (median) | spread over runs | bound | met |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for t in targets:
        lines.append(
            f"| {t['target']} | {t['ratio']:,.2f} | {t['min']:,.2f} - {t['max']:,.2f} | {t['bound']} "
            f"| {'yes' if t['met'] else 'NO'} |"
        )
    return "\n".join(lines) + "\n"


BENCHES: dict[str, Callable[..., Awaitable[list[Result]]]] = {
    "pump": bench_pump,
    "latency": bench_latency,
    "bulk": bench_bulk,
    "scale": bench_scale,
    "scale100k": bench_scale100k,
    "scale100k-freeze": bench_scale100k_freeze,
    "send": bench_send,
    # the same two on the Python path alone (TCPEMU_PURE_PYTHON=1 in the child): what a machine
    # without a C compiler at install time gets
    "pump-python": bench_pump,
    "bulk-python": bench_bulk,
}


async def child(args: argparse.Namespace) -> int:
    """One run of one benchmark in a fresh lab; results as JSON on stdout."""
    size = QUICK if args.quick else Size()
    async with open_lab() as lab:
        # pump and latency take use_scapy; the Python path's pump run leaves scapy out
        use_scapy = {"pump": not args.no_scapy, "latency": not args.no_scapy, "pump-python": False}
        extra = (use_scapy[args.child],) if args.child in use_scapy else ()
        results = await BENCHES[args.child](lab, size, *extra)
    if args.child.endswith("-python"):
        if SPEEDUPS is not None:
            raise RuntimeError(f"{args.child}: the compiled part is loaded (TCPEMU_PURE_PYTHON not set)")
        for r in results:
            r.name += PYTHON_PATH_ROW
    print(json.dumps([r.as_dict() for r in results]))
    return 0


def run(args: argparse.Namespace) -> int:
    # the machine may be shared: how busy it was says how far to trust the spread
    load = " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])
    by_name: dict[str, Result] = {}
    failures: list[str] = []
    # Repeats interleaved (pump, latency, ..., pump, latency, ...): a busy spell
    # of a shared machine then falls on one run of several benchmarks rather
    # than on every run of one.
    for rep in range(args.repeat):
        for name in args.only or list(BENCHES):
            # Each run in a fresh process and a fresh lab: no run inherits
            # another's sockets, heap or garbage, so RSS figures mean something.
            print(f"# {name} run {rep + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--child", name]
            cmd += ["--quick"] * args.quick + ["--no-scapy"] * args.no_scapy
            env = dict(os.environ, TCPEMU_PURE_PYTHON="1") if name.endswith("-python") else None
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False, env=env)
            if proc.returncode:
                # the others still run: one failure does not lose a long run's figures
                print(f"{name} run {rep + 1} failed (exit {proc.returncode})", file=sys.stderr)
                failures.append(f"{name} run {rep + 1}: exit {proc.returncode}")
                continue
            for d in json.loads(proc.stdout.strip().splitlines()[-1]):
                merged = by_name.setdefault(d["name"], Result(d["name"], d["unit"]))
                merged.runs += d["runs"]
                merged.note = d["note"] or merged.note
    results = list(by_name.values())
    targets = evaluate(by_name)
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "repeat": args.repeat,
        "quick": args.quick,
        "load": load,
        "compiled": SPEEDUPS is not None,
        "failures": failures,
    }
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": [r.as_dict() for r in results], "targets": targets}, indent=2)
    )
    md = markdown(results, targets, meta)
    if failures:
        md += "\nFailed runs: " + "; ".join(failures) + "\n"
    (out / "results.md").write_text(md)
    print(md)
    return 1 if failures else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not a measurement")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-scapy", action="store_true", help="leave out the scapy comparisons")
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--only", nargs="*", choices=list(BENCHES))
    p.add_argument("--child", choices=list(BENCHES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if os.geteuid() != 0:
        print("the benchmarks need root (namespaces and raw sockets)", file=sys.stderr)
        return 2
    if args.child:
        return trio.run(child, args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
