"""A listening endpoint of an engine: each SYN makes a new emulated connection.

``open_engine`` owns a nursery that runs the pump.  The pump waits for the
link to be readable, drains a batch of frames, classifies each one at fixed
offsets, hands it to the matching connection's sans-IO core and wakes that
connection's waiters.  It never blocks on a consumer: each core's queue is
bounded and an overflow is counted and logged.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from ._args import _deadline
from ._connection import Connection
from ._errors import (
    ConnectionClosedError,
    TcpemuTimeoutError,
    WouldBlock,
)
from .core import (
    ConnectionCore,
    Mode,
    TcpState,
    _worth_logging,
)
from .wire import (
    IPAddress,
    listen_key,
)

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["Listener", "ListenerStatistics"]

log = logging.getLogger("tcpemu.engine")


@dataclass(frozen=True, slots=True)
class ListenerStatistics:
    syns: int
    accepted: int
    waiting: int
    backlog_overflows: int


class Listener:
    """A listening endpoint made by :meth:`Engine.listen`; usable as ``async with``."""

    def __init__(
        self,
        engine: Engine,
        local_ip: IPAddress,
        local_port: int,
        local_mac: bytes,
        *,
        window: int | None,
        mss: int | None,
        backlog: int,
        auto_open: bool,
        max_queue: int,
        vlan: int | None = None,
        wscale: int | None = None,
        sack: bool = False,
        timestamps: bool | None = None,
    ) -> None:
        self._engine = engine
        self.local_ip = local_ip
        self.local_port = local_port
        self.local_mac = local_mac
        self.vlan = vlan
        """The VLAN ID whose SYNs this listener takes (None: untagged frames)."""
        self._window, self._mss, self._max_queue = window, mss, max_queue
        self._wscale, self._sack, self._timestamps = wscale, sack, timestamps
        # every connection's core is forked from this one: the arguments are
        # checked here, once, and not again for each SYN
        self._prototype = self._new_prototype()
        self.backlog = backlog
        self.auto_open = auto_open
        self._handshaking: set[Connection] = set()
        self._ready: deque[Connection] = deque()
        self._changed = trio.Event()
        self._closed = False
        self._syns = 0
        self._accepted = 0
        self._overflows = 0

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(
            syns=self._syns,
            accepted=self._accepted,
            waiting=len(self._ready) + len(self._handshaking),
            backlog_overflows=self._overflows,
        )

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _new_prototype(self) -> ConnectionCore:
        engine = self._engine
        return ConnectionCore(
            Mode.SERVER,
            src_port=self.local_port,
            dst_port=None,
            isn=0,
            window=self._window,
            mss=self._mss,
            max_queue=self._max_queue,
            reliable=engine.reliable,
            rto=engine.rto,
            wscale=self._wscale,
            sack=self._sack,
            timestamps=self._timestamps,
        )

    def _spawn(self, frame: bytes, fkey: bytes, lkey: bytes) -> Connection | None:
        self._syns += 1
        if len(self._ready) + len(self._handshaking) >= self.backlog:
            self._overflows += 1
            if _worth_logging(self._overflows):
                log.warning(
                    "listener %s:%d: backlog of %d full, SYN not answered (%d so far)",
                    self.local_ip,
                    self.local_port,
                    self.backlog,
                    self._overflows,
                )
            return None
        n = len(lkey) - 2
        engine = self._engine
        remote_ip = engine._address(fkey[:n])
        (remote_port,) = struct.unpack_from("!H", fkey, 2 * n)
        proto = self._prototype
        if proto.reliable != engine.reliable or proto.rto != engine.rto:
            proto = self._prototype = self._new_prototype()  # the engine's settings were changed
        core = proto.fork(dst_port=remote_port, isn=engine._rng.getrandbits(32))
        engine._label_seq += 1
        conn = Connection(
            engine,
            core,
            local_ip=self.local_ip,
            remote_ip=remote_ip,
            local_mac=self.local_mac,
            remote_mac=frame[6:12],
            label=f"c{engine._label_seq} ",
            vlan=self.vlan,
        )
        conn._listener = self
        engine._register(conn, engine._conns, fkey)  # the listener's address is in the filter already
        self._handshaking.add(conn)
        return conn

    def _progress(self, conn: Connection, now: float) -> None:
        """After each segment of a connection still in this listener."""
        core = conn.core
        if core.syn_got and not core.syn_sent:
            if self.auto_open:
                conn._transmit(core.syn_ack(now))
            else:
                self._wake()  # accept() hands it out unanswered
                return
        if core.opened or core.rst_got or core.state is TcpState.CLOSED:
            self._handshaking.discard(conn)
            conn._listener = None
            if core.opened:
                core.discard_handshake()
                self._ready.append(conn)
                self._wake()
            else:
                self._engine._unregister(conn)

    async def accept(self, timeout: float | None = None) -> Connection:
        """The next connection; established when ``auto_open``, else answer it with ``wait_open``."""
        if timeout is None:
            return await self._accept()  # no cancel scope of our own to enter and leave
        with trio.move_on_at(_deadline("accept", timeout)):
            return await self._accept()
        raise TcpemuTimeoutError(
            f"accept on {self.local_ip}:{self.local_port}: no connection within {timeout} s "
            f"({self._syns} SYNs seen, {len(self._handshaking)} handshakes unfinished)"
        )

    async def _accept(self) -> Connection:
        while True:
            try:
                return self.accept_nowait()
            except WouldBlock:
                await self._changed.wait()

    def accept_nowait(self) -> Connection:
        if self._closed:
            raise ConnectionClosedError(f"listener {self.local_ip}:{self.local_port} is closed")
        self._engine._check_running("accept")
        if self._ready:
            self._accepted += 1
            return self._ready.popleft()
        if not self.auto_open:
            for conn in self._handshaking:
                if conn.core.syn_got and not conn.core.syn_sent:
                    self._handshaking.discard(conn)
                    conn._listener = None
                    self._accepted += 1
                    return conn
        raise WouldBlock(f"no connection waiting on {self.local_ip}:{self.local_port}")

    async def aclose(self) -> None:
        """Stop listening; connections not accepted yet are destroyed (nothing is sent)."""
        if not self._closed:
            self._closed = True
            self._engine._auto.pop(listen_key(self.local_ip, self.local_port), None)
            for conn in [*self._ready, *self._handshaking]:
                await conn.aclose()
            self._ready.clear()
            self._handshaking.clear()
            self._changed.set()
            self._engine._release_address(self.local_ip)
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
