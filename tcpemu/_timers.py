"""The engine's timer task: retransmission timeouts of reliable connections and the
release of frames that fault injection held back."""

from __future__ import annotations

import heapq
import logging
import math
from typing import TYPE_CHECKING, Final

import trio

from ._connection import Connection
from ._errors import (
    EngineBrokenError,
)
from .capture import OUTBOUND
from .core import (
    SegmentKind,
)
from .wire import (
    TcpFlags,
)

if TYPE_CHECKING:
    from ._engine import Engine

log = logging.getLogger("tcpemu.engine")
trace_log = logging.getLogger("tcpemu.trace")
BATCH: Final = 256
_EXPECTED: Final = SegmentKind.EXPECTED  # a global: quicker than the member looked up on its class
_RETRANSMIT: Final = SegmentKind.RETRANSMIT
_RST: Final = TcpFlags.RST


class Timers:
    """A part of :class:`~tcpemu.Engine` (its state lives in the engine)."""

    def _hold(self: Engine, delay: float, direction: int, frame: bytes, conn: Connection) -> None:
        release = trio.current_time() + delay
        heapq.heappush(self._held, (release, next(self._held_seq), direction, frame, conn))
        self._kick_timers(release)

    def _kick_timers(self: Engine, deadline: float | None) -> None:
        """Wake the timer task if ``deadline`` comes before the one it sleeps until."""
        if deadline is not None and deadline < self._planned:
            self._timer_wakeup.set()

    def _next_deadline(self: Engine) -> float:
        deadline = self._held[0][0] if self._held else math.inf
        for conn in self._all:
            d = conn.core.next_deadline() if conn.core.reliable else None
            if d is not None and d < deadline:
                deadline = d
        return deadline

    async def _timers(self: Engine, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Retransmission timeouts of reliable connections and release of held frames."""
        task_status.started()
        while True:
            self._timer_wakeup = trio.Event()
            self._planned = self._next_deadline()
            with trio.move_on_at(self._planned):
                await self._timer_wakeup.wait()
            self._planned = math.inf  # the deadlines are computed afresh before the next wait
            if self._closed or self._broken is not None:
                return
            now = trio.current_time()
            touched: set[Connection] = set()
            self._background = True
            try:
                self._fire_timers(now, touched)
            finally:
                self._background = False
            for conn in touched:
                conn._wake()

    def _fire_timers(self: Engine, now: float, touched: set[Connection]) -> None:
        while self._held and self._held[0][0] <= now:
            _, _, direction, frame, conn = heapq.heappop(self._held)
            if conn._closed:
                continue
            if direction == OUTBOUND:
                self._transmit([frame])
            elif self._dispatch(frame, now, replay=True) is not None:
                touched.add(conn)
        for conn in list(self._all):
            if conn.core.reliable:
                try:
                    for seg in conn.core.handle_timer(now):
                        self._send_segment(conn, seg, "retransmit")  # its event says why
                        touched.add(conn)  # a waiter may be waiting for this very retransmission
                except EngineBrokenError:
                    raise
                except Exception:
                    self._internal_errors += 1
                    log.exception("%s: the timer of %s failed", self.name, conn)
