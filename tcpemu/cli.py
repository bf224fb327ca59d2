"""The ``tcpemu`` command: ``demo`` runs the seed scenario in a throwaway lab, ``soak`` many
connections for a while, ``cleanup`` removes labs left by killed runs; ``check-link``
(:mod:`tcpemu.linkcheck`) and ``packetdrill`` (:mod:`tcpemu.packetdrill`) come from their modules.

Exit codes: 0 passed, 1 failed, 2 usage error (or missing privileges), 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import random
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, TextIO

import trio

from . import (
    CLIENT,
    SERVER,
    TcpemuError,
    TcpState,
    UsageError,
    __version__,
    open_engine,
    rootless,
    tcp_state,
    wait_tcp_state,
)
from . import lab as _lab
from ._netns import NETNS_RUN_DIR
from .faults import Faults
from .lab import Lab, cleanup_stale_labs, connect_nowait, open_lab, recv_exactly, stale_labs
from .net import list_netns

if TYPE_CHECKING:
    from .soak import SoakResult

TST_PORT = 20000
IUT_PORT = 30000

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

CAPABILITIES = {"CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}
"""What a lab and an engine need: namespaces (CAP_SYS_ADMIN), links, addresses and neighbours
(CAP_NET_ADMIN), raw sockets (CAP_NET_RAW); by their bit in the capability sets."""
LAB_CAPABILITIES = ("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW")


def effective_capabilities(status: str = "/proc/self/status") -> int:
    """The CapEff mask of this process, read from ``status`` (a /proc status file)."""
    try:
        with open(status) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError) as exc:
        raise TcpemuError(f"could not read the effective capabilities from {status}: {exc}") from exc
    raise TcpemuError(f"no CapEff line in {status}")


def missing_capabilities(
    needed: Sequence[str] = LAB_CAPABILITIES, status: str = "/proc/self/status"
) -> list[str]:
    """The capabilities of ``needed`` that this process lacks (none missing: ``[]``).

    Capabilities, not the user id, decide: root without them cannot make a
    namespace, and a user granted them can.
    """
    unknown = [name for name in needed if name not in CAPABILITIES]
    if unknown:
        raise UsageError(f"unknown capabilities {unknown}; known: {', '.join(sorted(CAPABILITIES))}")
    mask = effective_capabilities(status)
    return [name for name in needed if not mask >> CAPABILITIES[name] & 1]


def netns_dir_problem(what: str, directory: str = NETNS_RUN_DIR) -> str | None:
    """A sentence saying that ``what`` cannot name namespaces because ``directory`` (or the
    directory that would hold it) is not writable by this process, or None when it is.

    A lab's namespaces are files there; root-owned systems let a user in only with
    CAP_DAC_OVERRIDE, whatever other capabilities it has.
    """
    path = directory
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    # effective ids: the kernel's own access check, which counts CAP_DAC_OVERRIDE
    if os.access(path, os.W_OK, effective_ids=True):
        return None
    return (
        f"{what} cannot name network namespaces: {path} is not writable by this process; "
        "run it as root, or grant CAP_DAC_OVERRIDE too (or make the directory writable)"
    )


def privilege_problem(
    what: str,
    needed: Sequence[str] = LAB_CAPABILITIES,
    why: str = "namespaces, veth links and raw sockets",
    *,
    names_namespaces: bool = True,
) -> str | None:
    """A sentence saying what ``what`` lacks to run here (it needs ``needed`` for ``why`` and,
    with ``names_namespaces``, a writable namespace directory), or None when nothing is missing."""
    missing = missing_capabilities(needed)
    if missing:
        return (
            f"{what} needs {', '.join(needed)} ({why}); "
            f"this process lacks {', '.join(missing)}: run it as root or grant "
            + ("that capability" if len(needed) == 1 else "those capabilities")
        )
    return netns_dir_problem(what) if names_namespaces else None


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


def _print(out: TextIO, text: str = "", *, end: str = "\n") -> None:
    print(text, end=end, file=out, flush=True)


def _is_tty(out: TextIO) -> bool:
    return hasattr(out, "isatty") and out.isatty()


def _summary(result: SoakResult, args: argparse.Namespace) -> dict[str, object]:
    """The machine-readable summary of a soak (``--json``)."""
    seconds = max(result.duration, 1e-9)
    return {
        "verdict": "INTERRUPTED" if result.interrupted else ("PASS" if result.passed else "FAIL"),
        "passed": result.passed,
        "interrupted": result.interrupted,
        "seed": args.seed,
        "connections": result.connections,
        "duration_s": round(result.duration, 3),
        "churn_bytes": args.churn_bytes,
        "stall_timeout_s": args.stall_timeout,
        "faults_out": args.faults_out,
        "faults_in": args.faults_in,
        "opened": result.opened,
        "closed": result.closed,
        "bytes_to_iut": result.bytes_to_iut,
        "bytes_to_emulator": result.bytes_to_emulator,
        "mb_per_s_to_iut": round(result.bytes_to_iut / seconds / 1e6, 3),
        "mb_per_s_to_emulator": round(result.bytes_to_emulator / seconds / 1e6, 3),
        "mismatches": result.mismatches,
        "errors": list(result.errors),
        "retransmits_seen": result.retransmits_seen,
        "retransmits_sent": result.retransmits_sent,
        "faults": dict(sorted(result.faults.items())),
        "kernel_drops": result.kernel_drops,
        "rss_before": result.rss_before,
        "rss_after_warmup": result.rss_after_warmup,
        "rss_peak_after_warmup": result.rss_peak_after_warmup,
        "rss_growth": round(result.rss_growth, 4),
    }


def _verdict_line(result: SoakResult) -> str:
    verdict = "INTERRUPTED" if result.interrupted else ("PASS" if result.passed else "FAIL")
    seconds = max(result.duration, 1e-9)
    faults = ", ".join(f"{k} {v}" for k, v in sorted(result.faults.items()))
    return (
        f"{verdict}: {result.duration:.0f} s, {result.connections} pairs, "
        f"{result.opened} connections opened, "
        f"{result.closed} closed; {_mb(result.bytes_to_iut)} to the IUT and "
        f"{_mb(result.bytes_to_emulator)} to the emulator "
        f"({result.bytes_to_iut / seconds / 1e6:.1f} and "
        f"{result.bytes_to_emulator / seconds / 1e6:.1f} MB/s), "
        "every byte checked; "
        f"{result.mismatches} mismatches, {len(result.errors)} errors; "
        f"retransmits seen {result.retransmits_seen}, sent {result.retransmits_sent}; "
        f"faults {sum(result.faults.values())} ({faults}); "
        f"kernel drops {result.kernel_drops}; " + _rss_text(result)
    )


def _rss_text(result: SoakResult) -> str:
    if not result.rss_after_warmup:
        return "RSS not judged: the warm-up (every pair's first connection) did not end within the run"
    return (
        f"RSS growth after warm-up {result.rss_growth:+.1%} "
        f"({result.rss_after_warmup / 2**20:.0f} -> {result.rss_peak_after_warmup / 2**20:.0f} MiB)"
    )


async def soak_command(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run ``tcpemu soak``; Ctrl-C (SIGINT) stops it with the summary of what was done."""
    from .soak import SoakStats, run_soak

    stats = SoakStats()
    stop = trio.Event()
    # with --json stdout carries the summary alone; progress and notes go to stderr
    notes = err if args.json else out
    live = _is_tty(notes)

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
            _print(notes, ("\r" + line) if live else line, end="" if live else "\n")

    async def interrupts(signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            if not stop.is_set():
                _print(notes, "\ninterrupted: stopping the connections and removing the lab")
                stop.set()

    with trio.open_signal_receiver(signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(interrupts, signals)
            if args.progress:
                nursery.start_soon(progress)
            try:
                result = await run_soak(
                    connections=args.connections,
                    duration=args.duration,
                    seed=args.seed,
                    churn_bytes=args.churn_bytes,
                    faults_out=_parse_faults(args.faults_out),
                    faults_in=_parse_faults(args.faults_in),
                    stats=stats,
                    stop=stop,
                    stall_timeout=args.stall_timeout,
                )
            finally:
                nursery.cancel_scope.cancel()
    if live:
        _print(notes)
    if args.json:
        _print(out, json.dumps(_summary(result, args), indent=None))
    else:
        _print(out, _verdict_line(result))
        for error in result.errors[:20]:
            _print(out, f"  error: {error}")
        if len(result.errors) > 20:
            _print(out, f"  ... and {len(result.errors) - 20} more errors")
    if result.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_PASS if result.passed else EXIT_FAIL


class _Collect(logging.Handler):
    """Keeps the warnings cleanup logs, to report why a namespace stayed."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def cleanup_command(*, dry_run: bool, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    stale = stale_labs()
    if dry_run:
        _print(
            out,
            f"would remove {len(stale)} stale lab namespaces" + (": " + ", ".join(stale) if stale else ""),
        )
        return EXIT_PASS
    if not stale:
        _print(out, "removed 0 stale lab namespaces: none found")
        return EXIT_PASS
    problem = privilege_problem("tcpemu cleanup", ("CAP_SYS_ADMIN",), "to unmount and remove namespaces")
    if problem is not None:
        _print(err, f"FAIL: {len(stale)} stale lab namespaces not removed ({', '.join(stale)}): {problem}")
        return EXIT_USAGE
    collect = _Collect()
    logger = logging.getLogger(_lab.__name__)
    logger.addHandler(collect)
    try:
        removed = cleanup_stale_labs()
    finally:
        logger.removeHandler(collect)
    left = [name for name in stale if name not in removed and name in list_netns()]
    _print(
        out, f"removed {len(removed)} stale lab namespaces" + (": " + ", ".join(removed) if removed else "")
    )
    if left:
        _print(err, f"FAIL: {len(left)} stale lab namespaces could not be removed: {', '.join(left)}")
        for message in collect.messages:
            _print(err, f"  {message}")
        return EXIT_FAIL
    return EXIT_PASS


def _number(
    convert: Callable[[str], float], allowed: str, ok: Callable[[float], bool]
) -> Callable[[str], float]:
    """An argparse type: ``convert`` the text, and refuse it (saying what is allowed) unless ``ok``."""

    def parse(text: str) -> float:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {allowed}") from None
        if value != value or not ok(value):  # NaN compares false with everything
            raise argparse.ArgumentTypeError(f"{text!r} is out of range: expected {allowed}")
        return value

    return parse


_CONNECTIONS = _number(int, "a whole number of pairs from 1 to 40000", lambda v: 1 <= v <= 40000)
_DURATION = _number(float, "a number of seconds > 0 and at most 604800 (a week)", lambda v: 0 < v <= 604800)
_STALL = _number(float, "a number of seconds > 0 and at most 3600", lambda v: 0 < v <= 3600)
_CHURN = _number(int, "a whole number of bytes >= 1", lambda v: v >= 1)
_PROGRESS = _number(
    float, "0 (no progress lines) or a number of seconds >= 0.1", lambda v: v == 0 or v >= 0.1
)


def _faults(text: str) -> str:
    """An argparse type: a fault description that :meth:`Faults.parse` takes, kept as text."""
    if text.strip().lower() == "none":
        return "none"
    try:
        Faults.parse(text)
    except TcpemuError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def _parse_faults(text: str) -> Faults | None:
    return None if text.strip().lower() in ("", "none") else Faults.parse(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tcpemu", description="TCP socket emulation for test suites")
    parser.add_argument("--version", action="version", version=f"tcpemu {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p_demo = sub.add_parser(
        "demo",
        help="run the seed scenario against the kernel in a throwaway lab",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_demo.add_argument("--seed", type=int, default=None, help="seed for ISNs and payloads (none: random)")
    p_demo.add_argument("--no-trace", action="store_true", help="do not print each segment")
    p_demo.add_argument(
        "--rootless",
        action="store_true",
        help="run as an ordinary user, in a user namespace tcpemu makes (where the kernel allows it)",
    )
    p_cleanup = sub.add_parser(
        "cleanup",
        help="remove lab namespaces left by killed runs",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_cleanup.add_argument(
        "--dry-run",
        action="store_true",
        help="list the stale lab namespaces, remove nothing (needs no rights)",
    )
    p_soak = sub.add_parser(
        "soak",
        help="many connections against the kernel, every byte checked, faults injected",
        description=(
            "Pairs of an IUT socket and an emulated listener exchange --churn-bytes each way, "
            "every byte checked, close and reconnect until --duration is up. Exit code 0 passed, "
            "1 failed, 2 usage error, 130 interrupted (Ctrl-C prints the summary of what was done)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p_soak.add_argument("--version", action="version", version=f"tcpemu {__version__}")
    p_soak.add_argument(
        "--connections", metavar="N", type=_CONNECTIONS, default=200, help="pairs running at once"
    )
    p_soak.add_argument("--duration", metavar="SECONDS", type=_DURATION, default=60.0, help="seconds")
    p_soak.add_argument(
        "--seed", metavar="N", type=int, default=0, help="seed of ISNs, payload patterns and faults"
    )
    p_soak.add_argument(
        "--churn-bytes",
        metavar="BYTES",
        type=_CHURN,
        default=256 * 1024,
        help="bytes each way before a reconnect",
    )
    p_soak.add_argument(
        "--faults-out",
        type=_faults,
        default="none",
        metavar="FAULTS",
        help="faults on frames the emulator sends, e.g. drop=0.01,duplicate=0.01,reorder=0.01,delay=0.01",
    )
    p_soak.add_argument(
        "--faults-in",
        type=_faults,
        default="none",
        metavar="FAULTS",
        help="the same, for frames the emulator receives",
    )
    p_soak.add_argument(
        "--stall-timeout",
        metavar="SECONDS",
        type=_STALL,
        default=60.0,
        help="a connection fails when none of its bytes moved for this long",
    )
    p_soak.add_argument(
        "--progress",
        metavar="SECONDS",
        type=_PROGRESS,
        default=1.0,
        help="seconds between progress lines (0: none)",
    )
    p_soak.add_argument(
        "--json",
        action="store_true",
        help="print the summary as one JSON object on stdout (progress lines go to stderr)",
    )
    # commands of other modules, which check their own arguments and rights
    from . import linkcheck
    from .packetdrill import cli as packetdrill_cli

    _COMMANDS["check-link"] = linkcheck.cli_main
    linkcheck.register_cli(sub)
    _COMMANDS["packetdrill"] = packetdrill_cli.cli_main
    packetdrill_cli.register_cli(sub)
    return parser


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
"""Sub-commands that other modules register, by name: their main function."""


def _interrupted(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return any(_interrupted(e) for e in exc.exceptions)
    return isinstance(exc, KeyboardInterrupt)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.command in _COMMANDS:
            return _COMMANDS[args.command](args)
        if args.command == "cleanup":
            return cleanup_command(dry_run=args.dry_run)
        if getattr(args, "rootless", False):
            try:
                rootless.enter()  # before trio or any thread starts
            except (TcpemuError, RuntimeError) as exc:
                print(f"--rootless: {exc}", file=sys.stderr)
                return EXIT_USAGE
        problem = privilege_problem(f"tcpemu {args.command}")
        if problem is not None:
            print(problem, file=sys.stderr)
            return EXIT_USAGE
        if args.command == "soak":
            try:
                return trio.run(soak_command, args)
            except UsageError as exc:
                print(f"usage error: {exc}", file=sys.stderr)
                return EXIT_USAGE
            except TcpemuError as exc:
                print(f"FAIL: {type(exc).__name__}: {exc}")
                return EXIT_FAIL
        return trio.run(lambda: demo(seed=args.seed, trace=not args.no_trace))
    except BaseException as exc:
        if _interrupted(exc):
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise


if __name__ == "__main__":
    sys.exit(main())
