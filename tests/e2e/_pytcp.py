"""PyTCP, a user-space TCP/IP stack from PyPI, as an IUT on a TAP device.

Two halves:

- run as a script (``python _pytcp.py --netns NS --tap IF ...``), it is the
  stack's process: it enters the namespace, lets PyTCP attach to the TAP
  device (PyTCP opens ``/dev/net/tun`` itself and owns the file descriptor),
  and serves TCP echo on PyTCP's own socket API.  It reports what happens on
  stdout as ``@event {json}`` lines and stops when its stdin closes;
- imported, :func:`open_tap_stack` makes a namespace and a persistent TAP
  device in it, starts that process, waits for its ``ready`` event and
  removes everything on exit, also when the test fails.

The namespace name follows the lab's pattern, so ``tcpemu cleanup`` (and every
``open_lab``) removes it if a run is killed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import struct
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

TUNSETIFF = 0x400454CA
TUNSETPERSIST = 0x400454CB
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
ETHTOOL_SGSO = 0x24
ETHTOOL_SGRO = 0x2C
EVENT_PREFIX = "@event "

STACK_IP = "198.18.7.1"
STACK_PREFIX = 24
STACK_MAC = "02:00:00:77:00:01"
ECHO_PORT = 7


def _event(kind: str, **fields: object) -> None:
    print(EVENT_PREFIX + json.dumps({"event": kind, **fields}), flush=True)


def _serve(args: argparse.Namespace) -> None:
    """The stack's process: PyTCP on the TAP, an echo service on its sockets."""
    sys.path.insert(0, args.root)
    from tcpemu._netns import enter_netns

    # First, while this process has one thread: every thread PyTCP starts
    # inherits the namespace, and so does its /dev/net/tun file descriptor.
    enter_netns(args.netns)

    import pytcp
    from pytcp import config
    from pytcp.lib import socket as pysocket

    config.LOG_CHANEL = set(args.log.split(",")) if args.log else set()
    stack = pytcp.TcpIpStack(
        interface=args.tap, mac_address=args.mac, ip4_address=f"{args.ip}/{STACK_PREFIX}"
    )
    # IPv4 only: PyTCP's IPv6 autoconfiguration adds seconds of DAD to the start
    # and nothing to what these tests look at.
    config.IP6_SUPPORT = False
    stack.start()

    listener = pysocket.socket(family=pysocket.AF_INET4, type=pysocket.SOCK_STREAM)
    listener.bind((args.ip, args.port))
    listener.listen()

    def echo(conn: pysocket.Socket, peer: tuple[str, int]) -> None:
        total = 0
        while True:
            data = conn.recv()
            if not data:
                break
            total += len(data)
            _event("recv", peer=list(peer), n=len(data), total=total)
            conn.send(data)
        _event("eof", peer=list(peer), total=total)
        conn.close()
        _event("closed", peer=list(peer))

    def accept_loop() -> None:
        while True:
            conn, peer = listener.accept()
            _event("accepted", peer=list(peer))
            threading.Thread(target=echo, args=(conn, peer), daemon=True).start()

    def connect(ip: str, port: int) -> None:
        conn = pysocket.socket(family=pysocket.AF_INET4, type=pysocket.SOCK_STREAM)
        try:
            conn.connect((ip, port))
        except OSError as exc:
            _event("connect-failed", peer=[ip, port], error=str(exc))
            return
        _event("connected", peer=[ip, port])
        echo(conn, (ip, port))

    threading.Thread(target=accept_loop, daemon=True).start()
    _event("ready", ip=args.ip, port=args.port, mac=args.mac, tap=args.tap)
    # Commands from the test, one a line, until it closes our stdin.
    for line in sys.stdin:
        match line.split():
            case ["connect", ip, port]:
                threading.Thread(target=connect, args=(ip, int(port)), daemon=True).start()
            case _:
                _event("bad-command", line=line.strip())
    # PyTCP's threads are not daemons and its stop() waits on them: leave at once.
    os._exit(0)


# ------------------------------------------------------------ the test side


@dataclass
class TapStack:
    """A running PyTCP on a TAP device: where it is and what it said."""

    netns: str
    tap: str
    ip: str
    mac: str
    port: int
    process: object
    events: list[dict[str, object]] = field(default_factory=list)
    output: list[str] = field(default_factory=list)

    _arrived: object = None  # a trio.Event, set and replaced at each event

    def seen(self, kind: str) -> list[dict[str, object]]:
        return [e for e in self.events if e["event"] == kind]

    def _add(self, event: dict[str, object]) -> None:
        self.events.append(event)
        if self._arrived is not None:
            self._arrived.set()  # type: ignore[attr-defined]

    async def wait_event(self, kind: str, count: int = 1, timeout: float = 10.0) -> dict[str, object]:
        """The ``count``-th event of ``kind`` from the stack's process, waiting for it."""
        import trio

        with trio.fail_after(timeout):
            while len(self.seen(kind)) < count:
                self._arrived = trio.Event()
                await self._arrived.wait()  # type: ignore[attr-defined]
        return self.seen(kind)[count - 1]

    async def command(self, line: str) -> None:
        """Send the stack's process a command (``connect IP PORT``)."""
        await self.process.stdin.send_all(line.encode() + b"\n")  # type: ignore[attr-defined]


def make_tap(netns: str, tap: str) -> None:
    """A persistent TAP device ``tap`` in ``netns``: made here, owned later by PyTCP's process.

    Persistent, so that it can be configured (up, no IPv6) before PyTCP attaches
    and so that the stack never writes to a device that is down (EIO).
    """
    from tcpemu._netns import run_in_netns

    def work() -> None:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", tap.encode(), IFF_TAP | IFF_NO_PI))
            fcntl.ioctl(fd, TUNSETPERSIST, 1)
        finally:
            os.close(fd)

    run_in_netns(netns, work)


def no_merging(netns: str, tap: str) -> None:
    """GRO and GSO off on the TAP, as the lab has them off on its veth (the TAP
    refuses the checksum switches: a TAP has no checksum offload to turn off)."""
    from tcpemu import net
    from tcpemu._netns import run_in_netns

    def work() -> None:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for cmd in (ETHTOOL_SGRO, ETHTOOL_SGSO):
                net._ethtool(sock, tap, cmd, 0)

    run_in_netns(netns, work)


def netns_name(rng: random.Random) -> str:
    # the lab's pattern (tcpemu-PID-TAG-ROLE), so that stale-lab cleanup knows it
    return f"tcpemu-{os.getpid()}-tap{rng.getrandbits(24):06x}-tst"


@contextlib.asynccontextmanager
async def open_tap_stack(
    *,
    rng: random.Random | None = None,
    tap: str = "tap0",
    ip: str = STACK_IP,
    mac: str = STACK_MAC,
    port: int = ECHO_PORT,
    log: str = "",
    ready_timeout: float = 30.0,
) -> AsyncIterator[TapStack]:
    """A fresh namespace with a TAP device that PyTCP owns, serving echo on ``ip:port``.

    The namespace has no address of its own and forwards nothing, so its kernel
    stays silent on the TAP: everything PyTCP says goes to the emulator only.
    """
    import trio

    from tcpemu import net

    rng = rng or random.Random()
    ns = netns_name(rng)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    await trio.to_thread.run_sync(net.create_netns, ns)
    try:
        await trio.to_thread.run_sync(
            net.sysctl_write,
            ns,
            # no link-local address, router or MLD solicitations from the kernel on the TAP
            [("net.ipv6.conf.default.disable_ipv6", "1"), ("net.ipv6.conf.all.disable_ipv6", "1")],
        )
        await trio.to_thread.run_sync(make_tap, ns, tap)
        await trio.to_thread.run_sync(no_merging, ns, tap)
        await trio.to_thread.run_sync(net.link_up, ns, tap)
        cmd = [sys.executable, os.path.abspath(__file__), "--serve", "--netns", ns, "--tap", tap]
        cmd += ["--ip", ip, "--mac", mac, "--port", str(port), "--root", root, "--log", log]
        proc = await trio.lowlevel.open_process(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        stack = TapStack(ns, tap, ip, mac, port, proc)
        ready = trio.Event()
        try:
            async with trio.open_nursery() as nursery:

                async def read_output() -> None:
                    buf = b""
                    assert proc.stdout is not None
                    while True:
                        chunk = await proc.stdout.receive_some(65536)
                        if not chunk:
                            ready.set()  # the process ended: the wait below sees it
                            return
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for raw in lines:
                            line = raw.decode(errors="replace")
                            stack.output.append(line)
                            if line.startswith(EVENT_PREFIX):
                                stack._add(json.loads(line[len(EVENT_PREFIX) :]))
                                if stack.events[-1]["event"] == "ready":
                                    ready.set()

                nursery.start_soon(read_output)
                with trio.fail_after(ready_timeout):
                    await ready.wait()
                if not stack.seen("ready"):
                    raise RuntimeError(
                        "PyTCP's process ended before it was ready:\n" + "\n".join(stack.output)
                    )
                try:
                    yield stack
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if proc.stdin is not None:
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await proc.stdin.aclose()
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(net.remove_netns, ns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="PyTCP serving TCP echo on a TAP device")
    parser.add_argument("--serve", action="store_true", required=True)
    parser.add_argument("--netns", required=True)
    parser.add_argument("--tap", required=True)
    parser.add_argument("--ip", default=STACK_IP)
    parser.add_argument("--mac", default=STACK_MAC)
    parser.add_argument("--port", type=int, default=ECHO_PORT)
    parser.add_argument("--root", required=True, help="the tcpemu checkout, for tcpemu._netns")
    parser.add_argument("--log", default="", help="PyTCP log channels, comma-separated (e.g. tcp-ss,tcp)")
    _serve(parser.parse_args(argv))


if __name__ == "__main__":
    main()
