"""Reliable mode: a retransmission timer for what the peer has not acknowledged.

A mixin of :class:`~tcpemu.core.ConnectionCore`.  Time is an argument; the
caller asks :meth:`next_deadline` and calls :meth:`handle_timer` then.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import TYPE_CHECKING

from ._message import CoreEvent
from ._state import seq_add, seq_diff
from .wire import ACK_BIT as _F_ACK
from .wire import FLAGS, Segment

if TYPE_CHECKING:
    from .core import ConnectionCore

log = logging.getLogger("tcpemu.core")


class _RetransmitMixin:
    __slots__ = ()

    def next_deadline(self: ConnectionCore) -> float | None:
        """When :meth:`handle_timer` has something to do (None: nothing pending)."""
        return self._rto_deadline if self._unacked else None

    def handle_timer(self: ConnectionCore, now: float) -> list[Segment]:
        """Retransmit the oldest unacknowledged segment if its timeout passed.

        The timeout doubles with each retransmission (up to 64 times ``rto``)
        and starts again from ``rto`` when the peer acknowledges new data.
        """
        deadline = self.next_deadline()
        if deadline is None or now < deadline:
            return []
        old = self._unacked[0]
        fl = int(old.flags) | (_F_ACK if self.rcv_nxt is not None else 0)
        again = Segment(
            old.src_port,
            old.dst_port,
            old.seq,
            self.rcv_nxt or 0,
            FLAGS[fl],
            min(self.window >> self.rcv_wscale, 0xFFFF),  # scaled as any segment we send
            old.urgent,
            old.options,
            old.payload,
        )
        self._record_sent(again, advance=False)
        self._counters.retransmits_sent += 1
        self.events.append(CoreEvent("retransmit", f"retransmission timeout: seq={old.seq} sent again"))
        self._backoff = min(self._backoff * 2, 64)
        self._rto_deadline = now + self.rto * self._backoff
        log.debug(
            "port %d: retransmit seq=%d len=%d (backoff x%d)",
            self.src_port,
            old.seq,
            old.seq_len,
            self._backoff,
        )
        return [again]

    def _acked_up_to(self: ConnectionCore, ack: int) -> None:
        q = self._unacked
        while isinstance(q, deque) and q and seq_diff(seq_add(q[0].seq, q[0].seq_len), ack) <= 0:
            q.popleft()
        self._backoff = 1
        self._rto_deadline = self._now + self.rto if q else None
