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
    send_segments: int = 20_000


QUICK = Size(
    pump_frames=5_000,
    scapy_frames=500,
    connects=100,
    scapy_connects=30,
    bulk_bytes=2_000_000,
    scale_conns=300,
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
        conn = engine.connection(
            SERVER,
            local=(str(lab.tst.ip), 20000),
            remote=(str(lab.iut.ip), 40000),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
            max_queue=n + 10,
        )
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
    if use_scapy:
        scapy_r.runs.append(await scapy_sniff_rate(lab, size.scapy_frames))
    tcpemu_rows = [emu, captured, stamped, full, bare]
    return [*tcpemu_rows, scapy_r] if use_scapy else tcpemu_rows


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
            "kernel p50",
            "kernel p99",
            "minimal Python responder p50",
            "minimal Python responder p99",
            "scapy p50",
            "scapy p99",
        )
    }
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=2) as engine:
        listener = engine.listen((tst_ip, 20000), local_mac=lab.alien_mac, backlog=size.connects + 10)

        async def drain() -> None:
            while True:
                conn = await listener.accept()
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            lat = json.loads(await collect(peer(lab.iut.netns, "connect", tst_ip, 20000, size.connects)))
            nursery.cancel_scope.cancel()
    res["emulated p50"].runs.append(percentile(lat, 0.5) / 1000)
    res["emulated p99"].runs.append(percentile(lat, 0.99) / 1000)

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
    return [r for r in res.values() if r.runs]


# --------------------------------------------------------------------------- 3


async def bench_bulk(lab: Lab, size: Size) -> list[Result]:
    tst_ip = str(lab.tst.ip)
    emu = Result("bulk: kernel -> tcpemu recv_data", "MB/s")
    kern = Result("bulk: kernel -> kernel", "MB/s")
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=3) as engine:
        listener = engine.listen((tst_ip, 20000), local_mac=lab.alien_mac)
        sender = peer(lab.iut.netns, "bulk", tst_ip, 20000, size.bulk_bytes)
        conn = await listener.accept(timeout=10)
        t0 = time.perf_counter()
        got = 0
        while not conn.fin_got:
            got += len(await conn.recv_data(idle=2, timeout=120))
        dt = time.perf_counter() - t0
        await conn.send_fin(timeout=10)
        await collect(sender)
        if got != size.bulk_bytes:
            raise RuntimeError(f"bulk: received {got} of {size.bulk_bytes} bytes")
        emu.runs.append(got / dt / 1e6)
        st = conn.statistics()
        emu.note = f"queue overflows {st.queue_overflows}, retransmits seen {st.retransmits_seen}"

    await lab.use_kernel_tester()
    try:
        sink = peer(lab.tst.netns, "sink", tst_ip, 20001)
        assert sink.stdout is not None
        await trio.to_thread.run_sync(sink.stdout.readline)
        t0 = time.perf_counter()
        await collect(peer(lab.iut.netns, "bulk", tst_ip, 20001, size.bulk_bytes))
        out = json.loads(await collect(sink))
        dt = time.perf_counter() - t0
    finally:
        await lab.add_alien_neighbour()
    kern.runs.append(out["bytes"] / dt / 1e6)
    return [emu, kern]


# --------------------------------------------------------------------------- 4


async def bench_scale(lab: Lab, size: Size) -> list[Result]:
    n = size.scale_conns
    tst_ip = str(lab.tst.ip)
    rate = Result(f"scale: {n} handshakes", "handshakes/s")
    per_conn = Result(f"scale: RSS per connection ({n} held)", "bytes")
    teardown = Result(f"scale: destroy {n} connections", "s")
    gc.collect()
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=4) as engine:
        listener = engine.listen((tst_ip, 20000), local_mac=lab.alien_mac, backlog=n + 100)
        conns = []
        base = rss_bytes()
        proc = peer(lab.iut.netns, "many", tst_ip, 20000, n, stdin=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdin is not None
        t0 = time.perf_counter()
        with trio.move_on_after(120):
            while len(conns) < n:
                conns.append(await listener.accept())
        if len(conns) < n:
            proc.kill()
            raise RuntimeError(
                f"scale: {len(conns)} of {n} connections in 120 s; {listener.statistics()}; "
                f"{engine.statistics()}"
            )
        dt = time.perf_counter() - t0
        line = json.loads(await trio.to_thread.run_sync(proc.stdout.readline))
        if line["connected"] != n:
            raise RuntimeError(f"scale: the IUT connected {line['connected']} of {n}")
        gc.collect()
        per_conn.runs.append((rss_bytes() - base) / n)
        rate.runs.append(n / dt)
        t0 = time.perf_counter()
        for c in conns:
            await c.aclose()
        teardown.runs.append(time.perf_counter() - t0)
        proc.stdin.close()
        await trio.to_thread.run_sync(proc.wait)
        del conns
    return [rate, per_conn, teardown]


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

TARGETS = [
    # (label, numerator, denominator, operator, bound)
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
    ("connect p99 emulated / kernel", "connect() emulated p99", "connect() kernel p99", "<=", 2.0),
    ("connect p99 scapy / emulated", "connect() scapy p99", "connect() emulated p99", ">=", 20.0),
    (
        "connect p99 minimal Python responder / kernel (the floor, no target)",
        "connect() minimal Python responder p99",
        "connect() kernel p99",
        "<=",
        2.0,
    ),
    ("bulk tcpemu / kernel", "bulk: kernel -> tcpemu recv_data", "bulk: kernel -> kernel", ">=", 0.25),
]


def evaluate(results: dict[str, Result]) -> list[dict[str, object]]:
    rows = []
    for label, num, den, op, bound in TARGETS:
        if num in results and den in results and results[den].median:
            ratio = results[num].median / results[den].median
            ok = ratio >= bound if op == ">=" else ratio <= bound
            rows.append({"target": label, "ratio": ratio, "bound": f"{op} {bound}", "met": ok})
    scale_rate = next(
        (r for k, r in results.items() if k.startswith("scale:") and k.endswith("handshakes")), None
    )
    scale_rss = next((r for k, r in results.items() if "RSS per connection" in k), None)
    if scale_rate:
        rows.append(
            {
                "target": "handshakes/s",
                "ratio": scale_rate.median,
                "bound": ">= 5000",
                "met": scale_rate.median >= 5000,
            }
        )
    if scale_rss:
        rows.append(
            {
                "target": "RSS per connection (bytes)",
                "ratio": scale_rss.median,
                "bound": "<= 8192",
                "met": scale_rss.median <= 8192,
            }
        )
    return rows


def markdown(results: list[Result], targets: list[dict[str, object]], meta: dict[str, object]) -> str:
    lines = [
        f"tcpemu benchmarks: {meta['when']}, {meta['machine']}, kernel {meta['kernel']}, "
        f"{meta['repeat']} runs each{' (quick)' if meta['quick'] else ''}",
        "",
        "| benchmark | median | min | max | unit | note |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for r in results:
        d = r.as_dict()
        lines.append(
            f"| {r.name} | {d['median']:,.1f} | {d['min']:,.1f} | {d['max']:,.1f} | {r.unit} | {r.note} |"
        )
    lines += ["", "| target | measured | bound | met |", "| --- | ---: | --- | --- |"]
    for t in targets:
        lines.append(f"| {t['target']} | {t['ratio']:,.2f} | {t['bound']} | {'yes' if t['met'] else 'NO'} |")
    return "\n".join(lines) + "\n"


BENCHES: dict[str, Callable[..., Awaitable[list[Result]]]] = {
    "pump": bench_pump,
    "latency": bench_latency,
    "bulk": bench_bulk,
    "scale": bench_scale,
    "send": bench_send,
}


async def child(args: argparse.Namespace) -> int:
    """One run of one benchmark in a fresh lab; results as JSON on stdout."""
    size = QUICK if args.quick else Size()
    async with open_lab() as lab:
        extra = (not args.no_scapy,) if args.child in ("pump", "latency") else ()
        results = await BENCHES[args.child](lab, size, *extra)
    print(json.dumps([r.as_dict() for r in results]))
    return 0


def run(args: argparse.Namespace) -> int:
    by_name: dict[str, Result] = {}
    for name in args.only or list(BENCHES):
        for rep in range(args.repeat):
            # Each run in a fresh process and a fresh lab: no run inherits
            # another's sockets, heap or garbage, so RSS figures mean something.
            print(f"# {name} run {rep + 1}/{args.repeat} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, "--child", name]
            cmd += ["--quick"] * args.quick + ["--no-scapy"] * args.no_scapy
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
            if proc.returncode:
                print(f"{name} run {rep + 1} failed (exit {proc.returncode})", file=sys.stderr)
                return proc.returncode
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
    }
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"meta": meta, "results": [r.as_dict() for r in results], "targets": targets}, indent=2)
    )
    md = markdown(results, targets, meta)
    (out / "results.md").write_text(md)
    print(md)
    return 0


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
