"""Running a parsed packetdrill script against a stack: the kernel in a lab, or any link.

The runner keeps packetdrill's clock: time 0 is the script's start;
an inbound packet (``<``), a system call, a ``%{ }%`` block or a shell
line happens at its script time; an outbound packet (``>``) is the
stack's next segment, which must match the line and arrive within the
tolerance of its time.  Relative times (``+t``) count from the previous
event's actual time, as packetdrill's do.

Sequence numbers are relative: the tester's ISN is drawn per run, the
stack's is learnt from its SYN or SYN-ACK.  TS val of the stack's
segments is not compared (its clock is its own): the first one seen maps
the script's values to the stack's, and inbound ``TS ecr`` values are
sent through that map.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import itertools
import json
import logging
import math
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any, Final

import trio

from .. import _engine
from .._engine import Connection
from .._errors import TcpemuError, UsageError
from .._netns import netns_path
from ..core import SERVER, Message
from ..notation import (
    SegmentPattern,
    _next_message,
    build_options,
    compare,
    format_segment,
)
from ..wire import OptionKind, TcpFlags, TcpOption
from . import syscalls
from .parse import (
    CodeEvent,
    Event,
    PacketEvent,
    Script,
    ScriptError,
    ShellEvent,
    SyscallEvent,
    Unsupported,
    parse_script,
)
from .results import _ECN_BITS, _ECN_NAMES, Result, _EcnTap, _Failure, summary
from .targets import DEFAULT_PORT, PACKETDRILL_SYSCTLS, LabTarget, LinkTarget, _open_target, _Setup

__all__ = [
    "PACKETDRILL_SYSCTLS",
    "DEFAULT_ADDRESSES",
    "Result",
    "LabTarget",
    "LinkTarget",
    "run_script",
    "run_scripts",
    "summary",
]

log = logging.getLogger("tcpemu.packetdrill")
_captures = itertools.count(1)

DEFAULT_ADDRESSES: Final = {
    "local4": "192.168.0.1",
    "remote4": "192.0.2.1",
    "local6": "fd3d:a0b:17d6::1",
    "remote6": "fd3d:fa7b:d17d::1",
}
"""packetdrill's default addresses: scripts that name them get the run's addresses instead."""

DEFAULT_TOLERANCE_USECS: Final = 4000
DEFAULT_TOLERANCE_PERCENT: Final = 12.5
LATE_GRACE: Final = 0.5
"""How long past an outbound packet's tolerance the runner still waits, to say how late it was."""
MAX_ANY_WAIT: Final = 30.0
"""The bound of a ``*`` outbound packet's wait."""


# ------------------------------------------------------------------- runner


class _Run:
    """One script's run: its clock, its flow, its sockets."""

    def __init__(self, script: Script, setup: _Setup, *, tolerance: float, percent: float, v6: bool) -> None:
        self.script = script
        self.setup = setup
        self.tolerance = tolerance
        self.percent = percent
        self.v6 = v6
        self.conn: Connection | None = None
        self.peer_isn: int | None = None  # the stack's ISN, from its SYN or SYN-ACK
        self.ts_offset: int | None = None  # stack's TS val minus the script's
        tick = script.flags.get("tcp_ts_tick_usecs")
        self.ts_tick = float(tick) / 1e6 if tick else None  # seconds per TS val tick, when checked
        self.t0 = 0.0
        self.last = 0.0  # the previous event's actual time, in script seconds
        self.last_script = 0.0  # ... and its script time
        self.pending: tuple[Event, float, float, trio.Event, dict[str, object]] | None = None
        self.evaluate = syscalls.Evaluator(self._address_map())

    # ---------------------------------------------------------------- set-up

    def _address_map(self) -> dict[str, str]:
        flags = self.script.flags
        out = {
            DEFAULT_ADDRESSES["local4"]: self.setup.stack_ip,
            DEFAULT_ADDRESSES["remote4"]: self.setup.tester_ip,
            DEFAULT_ADDRESSES["local6"]: self.setup.stack_ip,
            DEFAULT_ADDRESSES["remote6"]: self.setup.tester_ip,
            "::ffff:192.168.0.1": self.setup.stack_ip,
            "::ffff:192.0.2.1": self.setup.tester_ip,
        }
        if "local_ip" in flags:
            out[flags["local_ip"]] = self.setup.stack_ip
        if "remote_ip" in flags:
            out[flags["remote_ip"]] = self.setup.tester_ip
        return out

    def _open_flow(self, rng: random.Random) -> None:
        """The tester's end: passive when the script sends first, else bound by the stack's SYN."""
        first = next((e.action for e in self.script.events if isinstance(e.action, PacketEvent)), None)
        if first is None:
            return
        s = self.setup
        port = int(self.script.flags.get("bind_port", DEFAULT_PORT))
        connect_port = int(self.script.flags.get("connect_port", DEFAULT_PORT))
        if first.direction == "<":
            remote = (s.stack_ip, port)
            local = (s.tester_ip, rng.randrange(40000, 60000))
        else:
            remote, local = (s.stack_ip, None), (s.tester_ip, connect_port)
        self.conn = s.engine.connection(
            SERVER,
            local=local,
            remote=remote,  # type: ignore[arg-type]
            local_mac=s.tester_mac,
            remote_mac=s.stack_mac,
            isn=rng.getrandbits(32),
        )

    # ----------------------------------------------------------------- clock

    def now(self) -> float:
        return trio.current_time() - self.t0

    def _times(self, event: Event) -> tuple[float | None, float | None]:
        t = event.timing
        if t.kind == "any":
            return None, None
        base = self.last if t.kind == "relative" else 0.0
        start = base + t.start
        end = base + (t.end if t.end is not None else t.start)
        return start, end

    def _tolerance(self, start: float) -> float:
        return max(self.tolerance, self.percent / 100 * max(0.0, start - self.last))

    async def _until(self, start: float | None) -> None:
        # the script's clock: an event happens at its script time, whatever else is going on
        if start is not None:
            await trio.sleep_until(self.t0 + start)

    # ---------------------------------------------------------------- events

    async def run(self, rng: random.Random) -> None:
        self._open_flow(rng)
        self.t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            for event in self.script.events:
                start, end = self._times(event)
                action = event.action
                if isinstance(action, PacketEvent) and action.direction == ">":
                    actual = await self._outbound(event, action, start, end)
                elif isinstance(action, SyscallEvent):
                    await self._finish_pending()
                    await self._until(start)
                    actual = await self._syscall(event, action, start, end)
                elif isinstance(action, PacketEvent):
                    await self._until(start)
                    await self._inbound(event, action)
                    # the script time: sending takes microseconds, and the runner's own
                    # scheduling delays must not move the events after it
                    actual = self.now() if start is None else start
                else:
                    await self._until(start)
                    if isinstance(action, CodeEvent):
                        await self._code(event, action)
                    else:
                        await self._shell(event, action)
                    # a command takes what it takes: what follows counts from its end
                    actual = self.now()
                self.last_script = start if start is not None else actual
                self.last = actual
            await self._finish_pending()

    def _check_time(
        self, event: Event, what: str, start: float | None, end: float | None, actual: float
    ) -> None:
        if start is None or end is None:
            return
        tol = self._tolerance(start)
        if actual < start - tol:
            error = actual - start
        elif actual > end + tol:
            error = actual - end
        else:
            return
        span = f"{start:.3f} s" if end == start else f"{start:.3f}~{end:.3f} s"
        raise _Failure(
            event.line,
            f"timing: {what} expected at {span}, happened at {actual:.3f} s: "
            f"{'late' if error > 0 else 'early'} by {abs(error) * 1000:.1f} ms "
            f"(tolerance {tol * 1000:.1f} ms)",
            time_error=error,
        )

    # inbound -------------------------------------------------------------

    async def _inbound(self, event: Event, action: PacketEvent) -> None:
        conn = self.conn
        assert conn is not None
        p = action.pattern
        core = conn.core
        seq = (core.iss + (p.start or 0)) % 2**32
        ack = p.ack or 0
        if self.peer_isn is not None and p.ack is not None:
            ack = (self.peer_isn + p.ack) % 2**32
        fields: dict[str, object] = {
            "seq": seq,
            "ack": ack,
            "flags": p.flags,
            "window": 65535 if p.window is None else p.window,
        }
        if p.urgent is not None:
            fields["urgent"] = p.urgent
        if p.options:
            fields["options"] = build_options(p.options, sack_base=self.peer_isn, ecr_map=self.ts_offset or 0)
        if p.ecn:
            fields["tos"] = {"noecn": 0, "ect1": 1, "ect0": 2, "ce": 3, "ect01": 2}[p.ecn]
        if core.dst_port is None:
            raise _Failure(event.line, "inbound packet before the stack's SYN told the tester its port")
        await conn.send_segments(conn.segment(bytes(p.length or 0), **fields))

    # outbound ------------------------------------------------------------

    async def _outbound(
        self, event: Event, action: PacketEvent, start: float | None, end: float | None
    ) -> float:
        conn = self.conn
        assert conn is not None
        if start is None or end is None:
            deadline_in = MAX_ANY_WAIT
        else:
            deadline_in = max(0.0, self.t0 + end + self._tolerance(start) + LATE_GRACE - trio.current_time())
        msg = await _next_message(conn, deadline_in)
        want = action.pattern
        if msg is None:
            raise _Failure(
                event.line,
                f"missing: no packet from the stack by {self.now():.3f} s"
                + (f" (expected at {start:.3f} s)" if start is not None else ""),
                expected=f"> {want}",
                actual="nothing",
            )
        if msg.flags & TcpFlags.SYN:
            self.peer_isn = msg.seq
        actual_time = msg.time - self.t0
        diffs = compare(want, msg, seq_base=self.peer_isn, ack_base=conn.core.iss, check_tsval=False)
        got = "> " + self._format(msg)
        if diffs:
            raise _Failure(
                event.line, "packet differs: " + "; ".join(diffs), expected=f"> {want}", actual=got
            )
        if want.ecn is not None:
            tap = self.setup.engine.capture
            got_ecn = tap.ecn_of(msg) if isinstance(tap, _EcnTap) else None
            if got_ecn not in _ECN_BITS[want.ecn]:
                name = "unknown" if got_ecn is None else _ECN_NAMES[got_ecn]
                raise _Failure(
                    event.line, f"packet differs: ECN: expected [{want.ecn}], got [{name}]",
                    expected=f"> {want}", actual=f"> [{name}] {self._format(msg)}",
                )  # fmt: skip
        self._learn_ts(event, want, msg)
        self._check_time(event, f"> {want}", start, end, actual_time)
        return actual_time

    def _format(self, msg: Message) -> str:
        """The stack's segment as the script would write it: relative numbers, and its TS val
        on the script's clock once that is known."""
        assert self.conn is not None
        options = msg.options
        if self.ts_offset is not None:
            options = tuple(
                TcpOption.timestamps((o.value()[0] - self.ts_offset) % 2**32, o.value()[1])  # type: ignore[index]
                if o.kind == OptionKind.TIMESTAMP and len(o.data) == 8
                else o
                for o in options
            )
        return format_segment(
            msg.flags,
            msg.seq,
            msg.ack,
            msg.window,
            options,
            len(msg.payload),
            urgent=msg.urgent,
            seq_base=self.peer_isn,
            ack_base=self.conn.core.iss,
        )

    def _learn_ts(self, event: Event, want: SegmentPattern, msg: Message) -> None:
        """Map the script's TS values onto the stack's clock with the first one seen; with
        ``--tcp_ts_tick_usecs``, check the later ones against it (within the tolerance)."""
        if not want.options:
            return
        pattern = next((o for o in want.options if o.kind == OptionKind.TIMESTAMP), None)
        got = msg.timestamps
        if pattern is None or got is None or pattern.values[0] is None:
            return
        if self.ts_offset is None:
            self.ts_offset = (got[0] - pattern.values[0]) % 2**32
            return
        if self.ts_tick is None:
            return
        mapped = (got[0] - self.ts_offset) % 2**32
        error = mapped - pattern.values[0]
        allowed = math.ceil(self._tolerance(self.last) / self.ts_tick) + 1
        if abs(error) > allowed:
            raise _Failure(
                event.line,
                f"packet differs: TS val: expected {pattern.values[0]}, got {mapped} "
                f"(the stack's clock, {allowed} ticks allowed)",
                expected=f"> {want}",
                actual="> " + self._format(msg),
            )

    # syscalls ------------------------------------------------------------

    async def _syscall(
        self, event: Event, action: SyscallEvent, start: float | None, end: float | None
    ) -> float:
        handler = self.setup.handler
        if handler is None:
            raise Unsupported("system calls without a syscall handler", event.line)
        args = [self.evaluate(a) for a in action.args]
        call = syscalls.invoke(handler, action, args)
        done = trio.Event()
        box: dict[str, object] = {}
        begun = self.now()

        async def work() -> None:
            try:
                box["value"] = await trio.to_thread.run_sync(call, abandon_on_cancel=True)
            except OSError as exc:
                box["errno"] = exc.errno or errno.EIO
            except Unsupported as exc:
                box["unsupported"] = exc
            except (TcpemuError, TypeError, ValueError) as exc:
                box["error"] = exc
            box["time"] = self.now()
            done.set()

        self.nursery.start_soon(work)
        when = start if start is not None else begun
        if event.timing.blocking:
            self.pending = (event, when, end if end is not None else when, done, box)
            return when
        # a call not written as blocking must return at once (within the tolerance)
        with trio.move_on_after(self._tolerance(when) + LATE_GRACE):
            await done.wait()
        if not done.is_set():
            raise _Failure(
                event.line,
                f"{action.name}() blocked; the script says it returns at once",
                expected=action.text,
                actual="still blocked",
            )
        self._check_result(event, action, args, box)
        # what the call set off (a SYN, data) starts when it returned
        return max(when, float(box["time"]))  # type: ignore[arg-type]

    async def _finish_pending(self) -> None:
        if self.pending is None:
            return
        event, start, end, done, box = self.pending
        self.pending = None
        action = event.action
        assert isinstance(action, SyscallEvent)
        with trio.move_on_at(self.t0 + end + self._tolerance(start) + LATE_GRACE):
            await done.wait()
        if not done.is_set():
            raise _Failure(
                event.line,
                f"blocking {action.name}() had not returned by {self.now():.3f} s (expected by {end:.3f} s)",
                expected=action.text,
                actual="still blocked",
            )
        args = [self.evaluate(a) for a in action.args]
        self._check_result(event, action, args, box)
        self._check_time(event, f"{action.name}() return", end, end, float(box["time"]))  # type: ignore[arg-type]

    def _check_result(
        self, event: Event, action: SyscallEvent, args: list[object], box: dict[str, object]
    ) -> None:
        if "unsupported" in box:
            exc = box["unsupported"]
            assert isinstance(exc, Unsupported)
            raise Unsupported(exc.construct, event.line)
        if "error" in box:
            raise _Failure(event.line, f"{action.name}(): {box['error']}", expected=action.text)
        if "errno" in box:
            code = int(box["errno"])  # type: ignore[call-overload]
            got = f"-1 {syscalls.errno_name(code)} ({os.strerror(code)})"
            if action.result == -1 and action.errno == syscalls.errno_name(code):
                return
            if action.result is ...:
                return
            raise _Failure(
                event.line, f"{action.name}() returned {got}", expected=action.text, actual=f"= {got}"
            )
        value = box.get("value")
        output: object = None
        if isinstance(value, tuple):
            value, output = value
        if action.result is not ... and value != action.result:
            raise _Failure(
                event.line,
                f"{action.name}() returned {value}, expected {action.result}"
                + (f" {action.errno}" if action.errno else ""),
                expected=action.text,
                actual=f"= {value}",
            )
        if output is not None:
            index = {"getsockopt": 3, "ioctl": 2, "poll": 0}.get(action.name)
            if index is not None and index < len(args):
                diffs = syscalls.compare_output(args[index], output, f"{action.name}() value")
                if diffs:
                    raise _Failure(event.line, "; ".join(diffs), expected=action.text, actual=str(output))

    # %{ }% and shell -----------------------------------------------------

    async def _code(self, event: Event, action: CodeEvent) -> None:
        handler = self.setup.handler
        fd = handler.current() if hasattr(handler, "current") else None  # type: ignore[union-attr]
        if handler is None or fd is None or not hasattr(handler, "tcp_info"):
            raise Unsupported("%{ }% without a socket to read TCP_INFO from", event.line)
        try:
            info = await trio.to_thread.run_sync(handler.tcp_info, fd)  # type: ignore[attr-defined]
        except OSError as exc:
            raise _Failure(event.line, f"%{{ }}%: TCP_INFO of socket {fd}: {exc}") from None
        names: dict[str, object] = dict(syscalls.CONSTANTS)
        names.update(info)
        code = _dedent(action.code)
        try:
            exec(compile(code, f"{self.script.path}:{event.line}", "exec"), names)
        except AssertionError as exc:
            raise _Failure(event.line, f"%{{ }}% assertion failed: {exc}", expected=code.strip()) from None
        except NameError as exc:
            if "SK_MEMINFO" in str(exc):
                raise Unsupported("SK_MEMINFO_* in %{ }%", event.line) from None
            raise _Failure(event.line, f"%{{ }}%: {exc}", expected=code.strip()) from None
        except SyntaxError as exc:
            raise Unsupported(f"%{{ }}% code that is not Python 3 ({exc.msg})", event.line) from None

    async def _shell(self, event: Event, action: ShellEvent) -> None:
        netns = self.setup.shell_netns
        if netns is None:
            raise Unsupported("shell lines on a link without --netns", event.line)
        env = dict(os.environ)
        if self.setup.iut_ifname:
            env["TCPEMU_IUT_IFNAME"] = self.setup.iut_ifname
        cwd = os.path.dirname(os.path.abspath(self.script.path)) if os.path.exists(self.script.path) else None
        # nsenter joins the network namespace only (ip netns exec also makes a mount
        # namespace and remounts /sys: ten times slower, and the script's clock runs)
        proc = await trio.run_process(
            ["nsenter", f"--net={netns_path(netns)}", "sh", "-c", action.command],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=cwd,
            env=env,
        )
        if proc.returncode != 0:
            out = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
            raise _Failure(
                event.line,
                f"shell command exited with status {proc.returncode}" + (f": {out[-1]}" if out else ""),
                expected=f"`{action.command}`",
            )


def _dedent(code: str) -> str:
    return textwrap.dedent(code.strip("\n"))


# ------------------------------------------------------------------ driver


def _flag_float(flags: Mapping[str, str], name: str, default: float) -> float:
    if name not in flags:
        return default
    try:
        return float(flags[name])
    except ValueError:
        raise ScriptError(f"--{name}={flags[name]!r} is not a number") from None


async def run_script(
    path: str | os.PathLike[str],
    *,
    text: str | None = None,
    target: LabTarget | LinkTarget | None = None,
    ip_version: str | None = None,
    tolerance_usecs: int | None = None,
    tolerance_percent: float | None = None,
    artifacts: str | os.PathLike[str] | None = None,
    seed: int | None = None,
) -> Result:
    """Run one script and return its verdict; never raises for what the script does.

    ``text`` gives the script's text (default: read from ``path``).
    ``target`` defaults to the kernel in a throwaway lab.  ``ip_version``
    ("ipv4" or "ipv6"), ``tolerance_usecs`` and ``tolerance_percent``
    override the script's ``--flags``.  With ``artifacts``, a failing run
    leaves its pcapng capture and trace there.
    """
    path = os.fspath(path)
    began = time.monotonic()
    try:
        script = parse_script(text if text is not None else pathlib.Path(path).read_text(), path)
    except Unsupported as exc:
        return Result(path, "SKIP", f"unsupported: {exc.construct}")
    except (ScriptError, OSError) as exc:
        return Result(path, "FAIL", f"cannot read the script: {exc}")
    flags = script.flags
    for flag in ("non_fatal", "wire_server", "wire_client", "so_filter", "tun_dev", "persistent_tun_dev"):
        if flag in flags:
            return Result(path, "SKIP", f"unsupported: --{flag}")
    version = ip_version or flags.get("ip_version", "ipv4")
    if version not in ("ipv4", "ipv6"):
        return Result(path, "SKIP", f"unsupported: --ip_version={version}")
    try:
        tol = (
            tolerance_usecs
            if tolerance_usecs is not None
            else _flag_float(flags, "tolerance_usecs", DEFAULT_TOLERANCE_USECS)
        ) / 1e6
        percent = (
            tolerance_percent
            if tolerance_percent is not None
            else _flag_float(flags, "tolerance_percent", DEFAULT_TOLERANCE_PERCENT)
        )
    except ScriptError as exc:
        return Result(path, "FAIL", str(exc))
    target = target if target is not None else LabTarget()
    if isinstance(target, LinkTarget) and target.handler is None and script.has_syscalls():
        return Result(path, "SKIP", "unsupported: system calls without a syscall handler (--link)")
    rng = random.Random(seed)
    workdir = pathlib.Path(tempfile.mkdtemp(prefix="tcpemu-packetdrill-"))
    capture = workdir / (pathlib.Path(path).stem + ".pcapng")
    harness = _engine.ENGINE_CONTEXT.get()
    harness_dir = harness.capture_dir if harness is not None else None
    if artifacts is None and harness_dir is not None:
        # under pytest: in the plugin's directory, which it attaches to a failing test's report
        capture = harness_dir / f"packetdrill-{pathlib.Path(path).stem}-{next(_captures)}.pcapng"
    result: Result
    run: _Run | None = None
    try:
        async with AsyncExitStack() as stack:
            setup = await _open_target(stack, target, version == "ipv6", capture, flags, rng)
            run = _Run(script, setup, tolerance=tol, percent=percent, v6=version == "ipv6")
            try:
                await run.run(rng)
                result = Result(path, "PASS")
            finally:
                handler = setup.handler
                if isinstance(handler, syscalls.KernelSyscalls):
                    await trio.to_thread.run_sync(handler.close_all)
    except* Unsupported as group:
        exc = group.exceptions[0]
        assert isinstance(exc, Unsupported)
        result = Result(path, "SKIP", f"unsupported: {exc.construct}", line=exc.line or None)
    except* _Failure as group:
        f = group.exceptions[0]
        assert isinstance(f, _Failure)
        result = Result(path, "FAIL", f.reason, f.line, f.expected, f.actual, f.time_error)
    except* (TcpemuError, OSError) as group:
        result = Result(path, "FAIL", f"error: {group.exceptions[0]}")
    result.duration = time.monotonic() - began
    if run is not None and run.conn is not None:
        result.trace = run.conn.trace()
    if result.verdict == "FAIL" and artifacts is not None:
        keep = pathlib.Path(artifacts)
        keep.mkdir(parents=True, exist_ok=True)
        if capture.exists() and capture.is_relative_to(workdir):
            dest = keep / capture.name
            shutil.move(str(capture), dest)
            result.capture = str(dest)
        (keep / (pathlib.Path(path).stem + ".trace.txt")).write_text("\n".join(result.trace) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)
    return result


async def run_scripts(
    paths: Sequence[str | os.PathLike[str]],
    *,
    jobs: int = 1,
    on_result: Callable[[Result], object] | None = None,
    **kwargs: Any,
) -> list[Result]:
    """Run scripts and return their results in the order given.

    ``jobs`` above 1 runs that many at once against the kernel, each script
    in its own lab, in ``jobs`` worker processes (so that one script's work
    does not delay another's clock); over a link they run one at a time.
    ``on_result`` is called with each result as it comes.  Other keyword
    arguments go to :func:`run_script`.
    """
    if jobs < 1:
        raise UsageError(f"jobs must be at least 1, got {jobs}")
    results: list[Result | None] = [None] * len(paths)
    target = kwargs.get("target")

    def done(i: int, result: Result) -> None:
        results[i] = result
        if on_result is not None:
            on_result(result)

    if jobs == 1 or not (target is None or isinstance(target, LabTarget)):
        for i, p in enumerate(paths):
            done(i, await run_script(p, **kwargs))
    else:
        send, receive = trio.open_memory_channel[tuple[int, str | os.PathLike[str]]](len(paths))
        for item in enumerate(paths):
            send.send_nowait(item)
        send.close()
        async with trio.open_nursery() as nursery:
            for _ in range(min(jobs, len(paths))):
                nursery.start_soon(_worker, receive.clone(), kwargs, done)
    return [r for r in results if r is not None]


async def _worker(
    jobs: trio.MemoryReceiveChannel[tuple[int, str | os.PathLike[str]]],
    kwargs: Mapping[str, Any],
    done: Callable[[int, Result], None],
) -> None:
    """One child process running scripts one after the other: a spec per line on its
    stdin, a :class:`Result` as JSON per line on its stdout."""
    target = kwargs.get("target")
    common = {
        k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in kwargs.items() if k != "target"
    }
    common["sysctls"] = dict(target.sysctls) if isinstance(target, LabTarget) else {}
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "tcpemu.packetdrill.runner"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    pending = b""
    try:
        async with jobs:
            async for i, path in jobs:
                await proc.stdin.send_all(json.dumps({"path": os.fspath(path), **common}).encode() + b"\n")
                while b"\n" not in pending:
                    chunk = await proc.stdout.receive_some()
                    if not chunk:
                        done(i, Result(os.fspath(path), "FAIL", "error: the runner's worker process ended"))
                        return
                    pending += chunk
                line, pending = pending.split(b"\n", 1)
                done(i, Result(**json.loads(line)))
    finally:
        await proc.stdin.aclose()
        with trio.CancelScope(shield=True):
            await proc.wait()


def _child() -> None:
    """A worker process of :func:`run_scripts`: specs in, results out, one JSON line each."""
    for line in sys.stdin:
        spec = json.loads(line)
        path = spec.pop("path")
        target = LabTarget(spec.pop("sysctls"))
        result = trio.run(functools.partial(run_script, path, target=target, **spec))
        print(json.dumps(dataclasses.asdict(result)), flush=True)


if __name__ == "__main__":
    _child()
