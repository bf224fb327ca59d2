"""Drive a kernel IUT socket through the TCP states, one checked transition at a time.

Three ways to play the tester (:class:`DriverMode`):

- ``KERNEL``: the tester is a real kernel socket in the gateway lab; the
  gateway breaks one direction of traffic when a state must be held.
- ``EMULATED``: the tester is a tcpemu connection in the two-host lab, with
  the IUT's neighbour entry for the tester pointing at the alien MAC.
- ``EMULATED_GATEWAY``: the tester is a tcpemu connection behind the
  gateway, whose neighbour entry for the tester points at the alien MAC.

After each move the IUT's state is read back: TCP_INFO of the IUT socket,
or sock_diag where Linux keeps the state on another socket (a passive
open's SYN-RECEIVED is a request socket, TIME-WAIT a timewait socket).  A
move that does not land raises :class:`StateTransitionError` naming the
transition and the state the IUT was found in.

Paths are lists of states or strings such as
``"CLOSED -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1 -rst-> CLOSED"``; an arrow
may name how to go (``-rst->``, ``-timeout->``, ``-close->``) where a
transition allows more than one way.
"""

from __future__ import annotations

import enum
import errno
import random
import re
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import trio

from ._engine import Connection, Engine
from ._errors import TcpemuError, TcpemuTimeoutError, UsageError
from ._open import open_engine
from .core import QUIET, Mode, TcpState
from .lab import Direction, Lab, connect_nowait, open_lab
from .sockdiag import find_tcp_socket
from .tcpinfo import tcp_state, wait_tcp_state
from .wire import TcpFlags

__all__ = [
    "DriverMode",
    "StateDriver",
    "StateTransitionError",
    "open_state_driver",
    "parse_path",
    "LEGAL_MOVES",
]

S = TcpState
TCP_USER_TIMEOUT = 18
TCP_SYNCNT = 7
MOVE_TIMEOUT = 8.0  # seconds a move may take before it is reported as failed


class DriverMode(enum.Enum):
    KERNEL = "kernel"
    EMULATED = "emulated"
    EMULATED_GATEWAY = "emulated-gateway"


class StateTransitionError(TcpemuError):
    """A move did not bring the IUT socket to the target state."""


# (from, to) -> the ways the driver knows to make the move, the default first
LEGAL_MOVES: dict[tuple[TcpState, TcpState], tuple[str, ...]] = {
    (S.CLOSED, S.LISTEN): ("passive",),
    (S.CLOSED, S.SYN_SENT): ("active",),
    (S.LISTEN, S.CLOSED): ("close",),
    (S.LISTEN, S.SYN_RECEIVED): ("syn",),
    (S.SYN_RECEIVED, S.ESTABLISHED): ("ack",),
    (S.SYN_RECEIVED, S.LISTEN): ("rst",),
    (S.SYN_RECEIVED, S.FIN_WAIT_1): ("close",),
    (S.SYN_SENT, S.ESTABLISHED): ("syn-ack",),
    (S.SYN_SENT, S.SYN_RECEIVED): ("syn",),
    (S.SYN_SENT, S.CLOSED): ("rst", "timeout", "close"),
    (S.ESTABLISHED, S.FIN_WAIT_1): ("close",),
    (S.ESTABLISHED, S.CLOSE_WAIT): ("fin",),
    (S.ESTABLISHED, S.CLOSED): ("rst", "timeout"),
    (S.FIN_WAIT_1, S.FIN_WAIT_2): ("ack",),
    (S.FIN_WAIT_1, S.CLOSING): ("fin",),
    (S.FIN_WAIT_1, S.TIME_WAIT): ("fin-ack",),
    (S.FIN_WAIT_1, S.CLOSED): ("rst", "timeout"),
    (S.FIN_WAIT_2, S.TIME_WAIT): ("fin",),
    (S.FIN_WAIT_2, S.CLOSED): ("rst", "timeout"),
    (S.CLOSING, S.TIME_WAIT): ("ack",),
    (S.CLOSING, S.CLOSED): ("rst", "timeout"),
    (S.CLOSE_WAIT, S.LAST_ACK): ("close",),
    (S.CLOSE_WAIT, S.CLOSED): ("rst",),
    (S.LAST_ACK, S.CLOSED): ("ack", "rst", "timeout"),
    # TIME-WAIT's own timeout is 60 s on Linux (TCP_TIMEWAIT_LEN): only a RST is offered
    (S.TIME_WAIT, S.CLOSED): ("rst",),
}

# What the kernel-tester mode cannot do: a real peer cannot be made to send
# these segments, or no tester socket is left to send them.
_KERNEL_CANNOT = {
    (S.SYN_SENT, S.SYN_RECEIVED, "syn"): "simultaneous open needs a peer that sends a bare SYN on cue",
    (S.SYN_RECEIVED, S.LISTEN, "rst"): "a kernel tester does not reset its own half-open connection",
    (S.TIME_WAIT, S.CLOSED, "rst"): "the kernel tester has no socket left to send the RST from",
}

_ARROW = re.compile(r"\s*-(?:([a-z][a-z-]*)-)?>\s*")


def parse_path(path: str | list[TcpState | str]) -> list[tuple[TcpState, str | None]]:
    """``"A -> B -rst-> C"`` to ``[(A, None), (B, None), (C, "rst")]``."""
    if isinstance(path, str):
        parts = _ARROW.split(path.strip())
        states, hows = parts[0::2], [None, *parts[1::2]]
        return [(TcpState.parse(s), h or None) for s, h in zip(states, hows, strict=True)]
    return [(TcpState.parse(s) if isinstance(s, str) else s, None) for s in path]


@dataclass
class _Ports:
    iut: int
    tst: int


class StateDriver:
    """The session object: an IUT socket, a tester, and the state between them.

    Use :func:`open_state_driver`.  Accessors: :attr:`iut_socket` (the IUT
    socket the state lives on, None once it is closed), :attr:`iut_listener`,
    :attr:`tester` (the emulated :class:`~tcpemu.Connection` or the tester's
    kernel socket), :attr:`state`, :attr:`last_from`, :attr:`last_to`.
    """

    def __init__(
        self,
        mode: DriverMode,
        lab: Lab,
        engine: Engine | None,
        rng: random.Random,
        move_timeout: float = MOVE_TIMEOUT,
    ) -> None:
        self.mode = mode
        self.move_timeout = move_timeout
        self.lab = lab
        self.engine = engine
        self._rng = rng
        self.state = TcpState.CLOSED
        self.last_from: TcpState | None = None
        self.last_to: TcpState | None = None
        self.history: list[tuple[TcpState, TcpState, str]] = []
        self.iut_socket: trio.socket.SocketType | None = None
        self.iut_listener: trio.socket.SocketType | None = None
        self.tester: Connection | trio.socket.SocketType | None = None
        self._tst_listener: trio.socket.SocketType | None = None
        self._ports = _Ports(30000, 20000)
        self._passive = False  # the IUT side of the connection came from its listener
        self._broken: set[Direction] = set()
        self._sockets: list[trio.socket.SocketType] = []

    # ------------------------------------------------------------- public

    @property
    def emulated(self) -> bool:
        return self.mode is not DriverMode.KERNEL

    @property
    def conn(self) -> Connection:
        if not isinstance(self.tester, Connection):
            raise UsageError(f"no emulated connection in {self.mode.value} mode at {self.state.name}")
        return self.tester

    @property
    def iut_address(self) -> tuple[str, int]:
        return (str(self.lab.iut.ip), self._ports.iut)

    @property
    def tst_address(self) -> tuple[str, int]:
        return (str(self.lab.tst.ip), self._ports.tst)

    async def walk(self, path: str | list[TcpState | str], *, via: str | None = None) -> None:
        """Move along ``path``; its first state must be the current one."""
        steps = parse_path(path)
        if steps[0][0] is not self.state:
            raise UsageError(f"path starts at {steps[0][0].name}, but the IUT socket is in {self.state.name}")
        for target, how in steps[1:]:
            await self.move_to(target, via=how or via)

    async def move_to(self, target: TcpState | str, *, via: str | None = None) -> None:
        """One legal transition from the current state to ``target``, then verified."""
        to = TcpState.parse(target) if isinstance(target, str) else target
        frm = self.state
        ways = LEGAL_MOVES.get((frm, to))
        if ways is None:
            legal = sorted(t.name for (f, t) in LEGAL_MOVES if f is frm)
            raise UsageError(f"no legal move {frm.name} -> {to.name}; from {frm.name}: {', '.join(legal)}")
        how = via if via in ways else ways[0]
        if via is not None and via not in ways:
            raise UsageError(f"{frm.name} -> {to.name} can go by {', '.join(ways)}, not {via!r}")
        if not self.emulated and (frm, to, how) in _KERNEL_CANNOT:
            raise UsageError(
                f"{frm.name} -> {to.name} ({how}) is not possible with a kernel tester: "
                f"{_KERNEL_CANNOT[(frm, to, how)]}"
            )
        if frm is S.SYN_RECEIVED and to is S.FIN_WAIT_1 and self._passive:
            raise UsageError(
                "SYN_RECEIVED -> FIN_WAIT_1 needs the IUT socket itself in SYN_RECEIVED (simultaneous open)"
            )
        step = getattr(self, f"_{frm.name.lower()}__{to.name.lower()}")
        try:
            with trio.fail_after(self.move_timeout * 2):
                await step(how)
                await self._verify(frm, to, how)
        except trio.TooSlowError:
            raise StateTransitionError(
                f"{frm.name} -> {to.name} ({how}) did not complete in {self.move_timeout * 2} s; "
                f"IUT found in {await self._observed()}"
            ) from None
        except TcpemuTimeoutError as exc:
            raise StateTransitionError(
                f"{frm.name} -> {to.name} ({how}) failed: {exc}; IUT found in {await self._observed()}"
            ) from None
        self.last_from, self.last_to, self.state = frm, to, to
        self.history.append((frm, to, how))

    async def aclose(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        if isinstance(self.tester, Connection):
            await self.tester.aclose()

    # --------------------------------------------------------- verifying

    async def _verify(self, frm: TcpState, to: TcpState, how: str) -> None:
        if (
            to is S.TIME_WAIT
            or (to is S.SYN_RECEIVED and self._passive)
            or (self.iut_socket is None and to is not S.LISTEN)
        ):
            await self._wait_diag(to)
        elif to is S.LISTEN:
            assert self.iut_listener is not None
            await wait_tcp_state(self.iut_listener, S.LISTEN, timeout=self.move_timeout)
            if frm is S.SYN_RECEIVED:
                await self._wait_diag(S.CLOSED)  # the request socket is gone
        else:
            assert self.iut_socket is not None
            await wait_tcp_state(self.iut_socket, to, timeout=self.move_timeout)

    async def _diag_state(self) -> TcpState:
        entry = await trio.to_thread.run_sync(
            find_tcp_socket, self.lab.iut.netns, self.iut_address, self.tst_address
        )
        return S.CLOSED if entry is None else entry.state

    async def _wait_diag(self, want: TcpState) -> None:
        seen: list[TcpState] = []
        with trio.move_on_after(self.move_timeout):
            while True:
                state = await self._diag_state()
                if not seen or seen[-1] is not state:
                    seen.append(state)
                if state is want:
                    return
                await trio.sleep(0.005)
        raise TcpemuTimeoutError(
            f"sock_diag did not show {want.name} for {self.iut_address} within {self.move_timeout} s; "
            f"seen: {' -> '.join(s.name for s in seen)}"
        )

    async def _observed(self) -> str:
        parts = []
        for what, sock in (("socket", self.iut_socket), ("listener", self.iut_listener)):
            if sock is not None and sock.fileno() >= 0:
                with suppress(OSError):
                    parts.append(f"{tcp_state(sock).name} (TCP_INFO of the {what})")
        try:
            parts.append(f"{(await self._diag_state()).name} (sock_diag of the connection)")
        except Exception as exc:  # reporting only
            parts.append(f"sock_diag failed: {exc}")
        return ", ".join(parts)

    # ------------------------------------------------------------ helpers

    async def _new_iut_socket(self) -> trio.socket.SocketType:
        sock = await self.lab.iut.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await sock.bind(self.iut_address)
        self._sockets.append(sock)
        return sock

    def _next_ports(self) -> None:
        self._ports = _Ports(self._ports.iut + 1, self._ports.tst + 1)

    async def _break(self, direction: Direction) -> None:
        await self.lab.break_path(direction)
        self._broken.add(direction)

    async def _repair(self, direction: Direction) -> None:
        if direction in self._broken:
            await self.lab.repair_path(direction)
            self._broken.discard(direction)

    async def _repair_all(self) -> None:
        for d in list(self._broken):
            await self._repair(d)

    def _emu_connection(self, mode: Mode) -> Connection:
        assert self.engine is not None
        conn = self.engine.connection(
            mode,
            local=self.tst_address,
            remote=self.iut_address,
            local_mac=self.lab.alien_mac,
            remote_mac=self.lab.tst_next_hop_mac,
        )
        self.tester = conn
        return conn

    def _tester_socket(self) -> trio.socket.SocketType:
        assert isinstance(self.tester, trio.socket.SocketType)
        return self.tester

    async def _tst_socket(self) -> trio.socket.SocketType:
        sock = await self.lab.tst.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sockets.append(sock)
        return sock

    async def _emu_fin_got(self) -> None:
        await self.conn.wait_until(lambda c: c.fin_got, timeout=self.move_timeout, what="the IUT's FIN")

    def _set_user_timeout(self, ms: int = 600) -> None:
        assert self.iut_socket is not None
        self.iut_socket.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, ms)

    async def _kernel_rst(self) -> None:
        """The tester's kernel socket resets the connection (SO_LINGER 0 + close)."""
        sock = self._tester_socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    # ------------------------------------------------------------- opens

    async def _closed__listen(self, how: str) -> None:
        self._next_ports()
        self._passive = True
        self.iut_listener = await self._new_iut_socket()
        self.iut_listener.listen(8)
        self.iut_socket = None

    async def _closed__syn_sent(self, how: str) -> None:
        self._next_ports()
        self._passive = False
        if self.emulated:
            self._emu_connection(Mode.SERVER)
        else:
            self._tst_listener = await self._tst_socket()
            await self._tst_listener.bind(self.tst_address)
            self._tst_listener.listen(8)
            await self._break(Direction.IUT_TO_TST)
        self.iut_socket = await self._new_iut_socket()
        rc = connect_nowait(self.iut_socket, self.tst_address)
        if rc != errno.EINPROGRESS:
            raise StateTransitionError(
                f"IUT connect() returned {errno.errorcode.get(rc, rc)}, not EINPROGRESS"
            )
        if self.emulated:
            await self.conn.wait_msg(timeout=self.move_timeout)  # its SYN, left unanswered

    async def _listen__closed(self, how: str) -> None:
        assert self.iut_listener is not None
        self.iut_listener.close()
        self.iut_listener = None

    async def _listen__syn_received(self, how: str) -> None:
        if self.emulated:
            conn = self._emu_connection(Mode.CLIENT)
            await conn.wait_until(
                lambda c: c.core.syn_ack_got, timeout=self.move_timeout, what="the IUT's SYN-ACK"
            )
        else:
            await self._break(Direction.IUT_TO_TST)
            sock = await self._tst_socket()
            await sock.bind(self.tst_address)
            connect_nowait(sock, self.iut_address)
            self.tester = sock

    async def _syn_received__established(self, how: str) -> None:
        if self.emulated:
            if self._passive:
                await self.conn.wait_open(timeout=self.move_timeout)
            else:
                await self.conn.send_ack()  # simultaneous open: ACK the IUT's SYN
        else:
            await self._repair(Direction.IUT_TO_TST)
        if self._passive:
            assert self.iut_listener is not None
            with trio.fail_after(self.move_timeout):
                accepted, _ = await self.iut_listener.accept()
            self._sockets.append(accepted)
            self.iut_socket = accepted

    async def _syn_received__listen(self, how: str) -> None:
        conn = self.conn
        await conn.send_msg(flags=TcpFlags.RST, ack=QUIET)

    async def _syn_received__fin_wait_1(self, how: str) -> None:
        # Linux sends no FIN on shutdown() in SYN-RECEIVED, only on close();
        # the orphaned connection is then followed through sock_diag.
        assert self.iut_socket is not None
        self.iut_socket.close()
        self.iut_socket = None

    async def _syn_sent__established(self, how: str) -> None:
        if self.emulated:
            await self.conn.wait_open(timeout=self.move_timeout)
        else:
            await self._repair(Direction.IUT_TO_TST)
            assert self._tst_listener is not None
            with trio.fail_after(self.move_timeout):
                accepted, _ = await self._tst_listener.accept()
            self._sockets.append(accepted)
            self.tester = accepted

    async def _syn_sent__syn_received(self, how: str) -> None:
        # a bare SYN on our own ISN crosses the IUT's: simultaneous open
        await self.conn.send_msg(flags=TcpFlags.SYN, ack=QUIET)

    async def _syn_sent__closed(self, how: str) -> None:
        assert self.iut_socket is not None
        if how == "close":
            self.iut_socket.close()
            self.iut_socket = None
        elif how == "timeout":
            self.iut_socket.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
        elif self.emulated:
            await self.conn.send_msg(flags=TcpFlags.RST | TcpFlags.ACK)
        else:
            assert self._tst_listener is not None
            self._tst_listener.close()  # the next SYN meets a closed port: RST
            await self._repair(Direction.IUT_TO_TST)

    # ------------------------------------------------------------ closes

    async def _established__fin_wait_1(self, how: str) -> None:
        if not self.emulated:
            await self._break(Direction.IUT_TO_TST)  # the FIN is lost until repaired
        assert self.iut_socket is not None
        self.iut_socket.shutdown(socket.SHUT_WR)
        if self.emulated:
            await self._emu_fin_got()

    async def _established__close_wait(self, how: str) -> None:
        if self.emulated:
            await self.conn.send_fin(timeout=self.move_timeout)
        else:
            self._tester_socket().shutdown(socket.SHUT_WR)

    async def _to_closed_by(self, how: str) -> None:
        if how == "timeout":
            self._set_user_timeout()
            if not self.emulated:
                await self._break(Direction.IUT_TO_TST)
        elif self.emulated:
            await self.conn.send_rst()
        else:
            await self._kernel_rst()

    async def _established__closed(self, how: str) -> None:
        if how == "timeout":
            await self._to_closed_by(how)
            assert self.iut_socket is not None
            await self.iut_socket.send(b"x")  # unacknowledged data makes the user timeout run
        else:
            await self._to_closed_by(how)

    async def _fin_wait_1__fin_wait_2(self, how: str) -> None:
        if self.emulated:
            await self.conn.ack_all()
        else:
            await self._repair(Direction.IUT_TO_TST)  # the retransmitted FIN gets its ACK

    async def _fin_wait_1__closing(self, how: str) -> None:
        if self.emulated:
            conn = self.conn
            # our FIN, acknowledging everything but the IUT's FIN
            not_fin = (conn.next_ackn - 1) % (1 << 32)  # type: ignore[operator]
            await conn.send_msg(flags=TcpFlags.FIN | TcpFlags.ACK, ack=not_fin)
        else:
            self._tester_socket().shutdown(socket.SHUT_WR)

    async def _fin_wait_1__time_wait(self, how: str) -> None:
        if self.emulated:
            await self.conn.send_msg(flags=TcpFlags.FIN | TcpFlags.ACK)
            return
        # The tester's lone ACK of the FIN is lost; its FIN|ACK, retransmitted
        # after the repair, brings both at once.
        tester = self._tester_socket()
        await self._break(Direction.TST_TO_IUT)
        await self._repair(Direction.IUT_TO_TST)
        await wait_tcp_state(tester, S.CLOSE_WAIT, timeout=self.move_timeout)
        tester.shutdown(socket.SHUT_WR)
        await self._repair(Direction.TST_TO_IUT)

    async def _fin_wait_1__closed(self, how: str) -> None:
        await self._to_closed_by(how)

    async def _fin_wait_2__time_wait(self, how: str) -> None:
        if self.emulated:
            await self.conn.send_fin(timeout=self.move_timeout)
        else:
            self._tester_socket().shutdown(socket.SHUT_WR)

    async def _fin_wait_2__closed(self, how: str) -> None:
        if how == "timeout":
            # FIN-WAIT-2 times out only for an orphan: close it with a short tcp_fin_timeout
            await self.lab.iut.sysctl("net.ipv4.tcp_fin_timeout", "1")
            assert self.iut_socket is not None
            self.iut_socket.close()
            self.iut_socket = None
        else:
            await self._to_closed_by(how)

    async def _closing__time_wait(self, how: str) -> None:
        if self.emulated:
            await self._emu_fin_got()
            await self.conn.ack_all()
        else:
            await self._repair(Direction.IUT_TO_TST)

    async def _closing__closed(self, how: str) -> None:
        await self._to_closed_by(how)

    async def _close_wait__last_ack(self, how: str) -> None:
        if not self.emulated:
            await self._break(Direction.IUT_TO_TST)
        assert self.iut_socket is not None
        self.iut_socket.shutdown(socket.SHUT_WR)
        if self.emulated:
            await self._emu_fin_got()

    async def _close_wait__closed(self, how: str) -> None:
        await self._to_closed_by(how)

    async def _last_ack__closed(self, how: str) -> None:
        if how == "ack":
            if self.emulated:
                await self.conn.ack_all()
            else:
                await self._repair(Direction.IUT_TO_TST)
        else:
            await self._to_closed_by(how)

    async def _time_wait__closed(self, how: str) -> None:
        await self.conn.send_rst()


@asynccontextmanager
async def open_state_driver(
    mode: DriverMode | str,
    *,
    seed: int | None = None,
    iut_sysctls: dict[str, str] | None = None,
    move_timeout: float = MOVE_TIMEOUT,
) -> AsyncIterator[StateDriver]:
    """Build the lab the mode needs (and an engine for the emulated modes) and yield a driver."""
    m = DriverMode(mode)
    rng = random.Random(seed)
    gateway = m is not DriverMode.EMULATED
    async with open_lab(
        gateway=gateway, alien_neighbour=m is not DriverMode.KERNEL, rng=rng, iut_sysctls=iut_sysctls
    ) as lab:
        if m is DriverMode.KERNEL:
            driver = StateDriver(m, lab, None, rng, move_timeout)
            try:
                yield driver
            finally:
                await driver.aclose()
        else:
            async with open_engine(lab.tst.ifname, netns=lab.tst.netns, rng=rng) as engine:
                driver = StateDriver(m, lab, engine, rng, move_timeout)
                try:
                    yield driver
                finally:
                    await driver.aclose()
