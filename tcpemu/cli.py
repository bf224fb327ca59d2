"""The ``tcpemu`` command: ``tcpemu demo`` runs the seed scenario in a throwaway lab."""

from __future__ import annotations

import argparse
import errno
import logging
import os
import random
import socket
import sys
import time

import trio

from . import CLIENT, SERVER, TcpemuError, TcpState, open_engine, tcp_state, wait_tcp_state
from .lab import Lab, cleanup_stale_labs, connect_nowait, open_lab
from .net import list_netns

TST_PORT = 20000
IUT_PORT = 30000


class _Steps:
    def __init__(self, out: object) -> None:
        self.n = 0
        self.out = out
        self.t0 = time.monotonic()

    def __call__(self, text: str) -> None:
        self.n += 1
        print(f"[{self.n:2}] {text}", file=self.out, flush=True)  # type: ignore[arg-type]

    def detail(self, text: str) -> None:
        print(f"     {text}", file=self.out, flush=True)  # type: ignore[arg-type]


async def recv_exactly(sock: trio.socket.SocketType, n: int, timeout: float = 5) -> bytes:
    """Read exactly ``n`` bytes from a trio socket (fewer only at EOF), within ``timeout``."""
    buf = bytearray()
    with trio.fail_after(timeout):
        while len(buf) < n:
            chunk = await sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
    return bytes(buf)


async def _server_mode(lab: Lab, step: _Steps, rng: random.Random) -> None:
    async with open_engine(lab.tst.ifname, netns=lab.tst.netns, rng=rng) as engine:
        conn = engine.connection(
            SERVER,
            local=(str(lab.tst.ip), TST_PORT),
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
        )
        step(
            f"engine on {lab.tst.ifname}: SERVER connection {lab.tst.ip}:{TST_PORT}, "
            f"local MAC {lab.alien_mac}"
        )
        iut = await lab.iut.socket()
        rc = connect_nowait(iut, (str(lab.tst.ip), TST_PORT))
        step(f"IUT: non-blocking connect() to {lab.tst.ip}:{TST_PORT} returned {errno.errorcode.get(rc, rc)}")
        syn = await conn.wait_msg(timeout=5)
        step(
            f"SYN from the IUT seen (seq {syn.seq}); IUT socket state: {tcp_state(iut).name} "
            "(held until we answer)"
        )
        await conn.wait_open(timeout=5)
        await trio.lowlevel.wait_writable(iut)
        err = iut.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise TcpemuError(f"connect() failed on the IUT: {os.strerror(err)}")
        step(
            f"wait_open done, emulator {conn.state.name}; "
            f"IUT connect() succeeded, state {tcp_state(iut).name}"
        )
        payload = rng.randbytes(1024)
        await conn.send_msg(payload)
        got = await recv_exactly(iut, len(payload), 5)
        if got != payload:
            raise TcpemuError(f"IUT received {len(got)} bytes that differ from the 1024 sent")
        step("send_msg(1024 bytes): the IUT socket received exactly those bytes")
        back = rng.randbytes(3000)
        await iut.send(back)
        data = await conn.recv_data(idle=0.2, timeout=5)
        if data != back:
            raise TcpemuError(f"recv_data returned {len(data)} bytes, expected the IUT's {len(back)}")
        step(f"IUT sent {len(back)} bytes: recv_data returned them in order")
        await conn.send_fin(timeout=5)
        eof = await iut.recv(10)
        step(f"send_fin: the IUT acknowledged our FIN and its recv() returned {eof!r} (EOF)")
        iut.close()
        msg = await conn.recv_msg(timeout=5)
        while not conn.fin_got:
            msg = await conn.recv_msg(timeout=5)
        step(f"IUT close(): FIN got (seq {msg.seq}), emulator state {conn.state.name}")
        await conn.aclose()


async def _client_mode(lab: Lab, step: _Steps, rng: random.Random) -> None:
    listener = await lab.iut.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await listener.bind((str(lab.iut.ip), IUT_PORT))
    listener.listen(5)
    step(f"IUT: listening on {lab.iut.ip}:{IUT_PORT}")
    async with open_engine(lab.tst.ifname, netns=lab.tst.netns, rng=rng) as engine:
        conn = engine.connection(
            CLIENT,
            local=(str(lab.tst.ip), TST_PORT + 1),
            remote=(str(lab.iut.ip), IUT_PORT),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
        )
        await conn.wait_open(timeout=5)
        with trio.fail_after(5):
            accepted, peer = await listener.accept()
        step(f"CLIENT connection: SYN sent, wait_open done; IUT accept() returned {peer[0]}:{peer[1]}")
        await wait_tcp_state(accepted, TcpState.ESTABLISHED, timeout=5)
        await conn.send_msg(b"ping")
        got = await recv_exactly(accepted, 4, 5)
        await accepted.send(b"pong")
        data = await conn.recv_data(idle=0.2, timeout=5)
        step(f"data both ways: IUT got {got!r}, emulator got {data!r}")
        if got != b"ping" or data != b"pong":
            raise TcpemuError("CLIENT mode data exchange returned the wrong bytes")
        await conn.send_rst()
        try:
            with trio.fail_after(5):
                await accepted.recv(10)
        except ConnectionResetError:
            step("send_rst: the IUT's recv() failed with ECONNRESET")
        else:
            raise TcpemuError("the IUT's recv() did not fail after our RST")
        accepted.close()
        listener.close()


async def demo(*, seed: int | None, trace: bool, out: object = sys.stdout) -> int:
    rng = random.Random(seed)
    step = _Steps(out)
    handler: logging.Handler | None = None
    if trace:
        handler = logging.StreamHandler(out)  # type: ignore[arg-type]
        handler.setFormatter(logging.Formatter("     %(message)s"))
        logger = logging.getLogger("tcpemu.trace")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    names: list[str] = []
    try:
        async with open_lab(rng=rng) as lab:
            names = lab.namespaces
            step(
                f"lab {lab.name}: namespaces {lab.iut.netns} / {lab.tst.netns}, veth "
                f"{lab.iut.ifname} {lab.iut.ip} <-> {lab.tst.ifname} {lab.tst.ip}, offloads off"
            )
            neigh = [n for n in await lab.neighbours(lab.iut) if n[0] == str(lab.tst.ip)]
            step(f"IUT neighbour entry {lab.tst.ip} -> {neigh[0][1] if neigh else '?'} (alien MAC)")
            await _server_mode(lab, step, rng)
            await _client_mode(lab, step, rng)
        left = [n for n in names if n in list_netns()]
        if left:
            raise TcpemuError(f"namespaces left behind: {left}")
        step("lab removed: namespaces, veth and neighbour entries are gone")
    except (TcpemuError, OSError, trio.TooSlowError) as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=out)  # type: ignore[call-overload]
        return 1
    finally:
        if handler is not None:
            logging.getLogger("tcpemu.trace").removeHandler(handler)
    print("PASS: TCP socket emulation against the Linux kernel works end to end", file=out)  # type: ignore[call-overload]
    return 0


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


async def soak_command(args: argparse.Namespace, out: object = sys.stdout) -> int:
    from .faults import Faults
    from .soak import SoakStats, run_soak

    stats = SoakStats()
    faults_out = Faults.parse(args.faults_out) if args.faults_out else None
    faults_in = Faults.parse(args.faults_in) if args.faults_in else None
    live = hasattr(out, "isatty") and out.isatty()  # type: ignore[attr-defined]

    async def progress() -> None:
        last = (0.0, 0, 0)
        while True:
            await trio.sleep(args.progress)  # a display period
            if not stats.started:
                continue
            t = trio.current_time() - stats.started
            up, down = stats.bytes_to_emulator, stats.bytes_to_iut
            dt = max(t - last[0], 1e-9)
            line = (
                f"t={t:5.0f}s open {stats.open:4} opened {stats.opened:6} closed {stats.closed:6} | "
                f"to IUT {(down - last[2]) / dt / 1e6:6.1f} MB/s, "
                f"to emulator {(up - last[1]) / dt / 1e6:6.1f} MB/s | "
                f"retransmits seen {stats.retransmits_seen} sent {stats.retransmits_sent} | "
                f"errors {len(stats.errors)} mismatches {stats.mismatches} | "
                f"rss {stats.rss[-1][1] / 2**20 if stats.rss else 0:.0f} MiB"
            )
            last = (t, up, down)
            print(("\r" + line) if live else line, end="" if live else "\n", file=out, flush=True)  # type: ignore[call-overload]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(progress)
        result = await run_soak(
            connections=args.connections,
            duration=args.duration,
            seed=args.seed,
            churn_bytes=args.churn_bytes,
            faults_out=faults_out,
            faults_in=faults_in,
            stats=stats,
        )
        nursery.cancel_scope.cancel()
    if live:
        print(file=out)  # type: ignore[call-overload]
    verdict = "PASS" if result.passed else "FAIL"
    faults = ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items()))
    print(
        f"{verdict}: {result.duration:.0f} s, {result.connections} pairs, "
        f"{result.opened} connections opened, "
        f"{result.closed} closed; {_mb(result.bytes_to_iut)} to the IUT and "
        f"{_mb(result.bytes_to_emulator)} to the emulator, every byte checked; "
        f"{result.mismatches} mismatches, {len(result.errors)} errors; "
        f"retransmits seen {result.retransmits_seen}, sent {result.retransmits_sent}; "
        f"faults {sum(result.faults.values())} ({faults}); "
        f"kernel drops {result.kernel_drops}; RSS growth after warm-up {result.rss_growth:+.1%} "
        f"({result.rss_after_warmup / 2**20:.0f} -> {result.rss_peak_after_warmup / 2**20:.0f} MiB)",
        file=out,  # type: ignore[call-overload]
    )
    for error in result.errors[:20]:
        print(f"  error: {error}", file=out)  # type: ignore[call-overload]
    return 0 if result.passed else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tcpemu", description="TCP socket emulation for test suites")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser("demo", help="run the seed scenario against the kernel in a throwaway lab")
    p_demo.add_argument("--seed", type=int, default=None, help="seed for ISNs and payloads")
    p_demo.add_argument("--no-trace", action="store_true", help="do not print each segment")
    sub.add_parser("cleanup", help="remove lab namespaces left by killed runs")
    p_soak = sub.add_parser(
        "soak", help="many connections against the kernel, every byte checked, faults injected"
    )
    p_soak.add_argument("--connections", type=int, default=200)
    p_soak.add_argument("--duration", type=float, default=60.0, help="seconds")
    p_soak.add_argument("--seed", type=int, default=0)
    p_soak.add_argument(
        "--churn-bytes", type=int, default=256 * 1024, help="bytes each way before a reconnect"
    )
    p_soak.add_argument(
        "--faults-out", default="", help="e.g. drop=0.01,duplicate=0.01,reorder=0.01,delay=0.01"
    )
    p_soak.add_argument("--faults-in", default="", help="the same, for frames the emulator receives")
    p_soak.add_argument("--progress", type=float, default=1.0, help="seconds between progress lines")
    args = parser.parse_args(argv)
    if args.command == "cleanup":
        removed = cleanup_stale_labs()
        print(f"removed {len(removed)} stale lab namespaces" + (": " + ", ".join(removed) if removed else ""))
        return 0
    if os.geteuid() != 0:
        print(
            f"tcpemu {args.command} needs root "
            "(CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW for namespaces and raw sockets)"
        )
        return 2
    if args.command == "soak":
        try:
            return trio.run(soak_command, args)
        except TcpemuError as exc:
            print(f"FAIL: {exc}")
            return 2
    return trio.run(lambda: demo(seed=args.seed, trace=not args.no_trace))


if __name__ == "__main__":
    sys.exit(main())
