"""What a core keeps of what it received: the message queue, the in-order stream
not read yet, and the out-of-order store that reassembly drains.

A mixin of :class:`~tcpemu.core.ConnectionCore` (its fields live in the core's slots).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from ._errors import WouldBlock
from ._message import Message, SegmentKind
from ._state import seq_add, seq_diff
from .wire import ACK_BIT as _F_ACK
from .wire import FIN_BIT as _F_FIN
from .wire import RST_BIT as _F_RST
from .wire import SYN_BIT as _F_SYN
from .wire import URG_BIT as _F_URG
from .wire import Segment

if TYPE_CHECKING:
    from .core import ConnectionCore

log = logging.getLogger("tcpemu.core")
_RETRANSMIT: Final = SegmentKind.RETRANSMIT
_EXPECTED: Final = SegmentKind.EXPECTED
_HANDSHAKE_ONLY: Final = _F_ACK | _F_FIN | _F_RST | _F_SYN | _F_URG


@dataclass(slots=True)
class _OutOfOrder:
    """Out-of-order data kept until the gap before it fills: seq -> (payload, fin)."""

    pieces: dict[int, tuple[bytes, bool]] = field(default_factory=dict)
    size: int = 0


class _ReceiveBufferMixin:
    __slots__ = ()

    def _store_out_of_order(self: ConnectionCore, seg: Segment) -> None:
        ooo = self._ooo
        old = ooo.pieces.get(seg.seq)
        grow = len(seg.payload) - (len(old[0]) if old else 0)
        if grow <= 0 and not (int(seg.flags) & _F_FIN and old and not old[1]):
            return
        if ooo.size + max(grow, 0) > self.max_out_of_order:
            self._counters.stream_overflow_bytes += len(seg.payload)
            log.warning("port %d: out-of-order store full, seq=%d not kept", self.src_port, seg.seq)
            return
        ooo.size += max(grow, 0)
        ooo.pieces[seg.seq] = (seg.payload, bool(int(seg.flags) & _F_FIN))

    def _drain_out_of_order(self: ConnectionCore) -> None:
        """Move stored pieces that now touch next_ackn into the stream."""
        ooo = self._ooo
        progressed = True
        while progressed and ooo.pieces and self.rcv_nxt is not None and not self.fin_got:
            progressed = False
            for seq in list(ooo.pieces):
                payload, fin = ooo.pieces[seq]
                d = seq_diff(seq, self.rcv_nxt)
                if d > 0:
                    continue
                del ooo.pieces[seq]
                ooo.size -= len(payload)
                if d + len(payload) + fin > 0:
                    # the first -d bytes overlap what is already in order
                    self._take_data(payload[-d:], fin)
                    progressed = True
                    if self.fin_got:
                        break

    def pending(self: ConnectionCore) -> int:
        return len(self._queue)

    def peek_message(self: ConnectionCore, *, skip_retransmits: bool = False) -> Message | None:
        for msg in self._queue:
            if not (skip_retransmits and msg.kind is _RETRANSMIT):
                return msg
        return None

    def peek_expected(self: ConnectionCore) -> Message | None:
        for msg in self._queue:
            if msg.kind is _EXPECTED:
                return msg
        return None

    def discard_handshake(self: ConnectionCore) -> int:
        """Drop queued SYNs and pure ACKs: what the handshake consumed.  Returns how many."""
        keep = deque(
            m
            for m in self._queue
            if not (int(m.flags) & _F_SYN or (not m.payload and int(m.flags) & _HANDSHAKE_ONLY == _F_ACK))
        )
        dropped = len(self._queue) - len(keep)
        self._queue = keep
        return dropped

    def pop_message_nowait(self: ConnectionCore, *, skip_retransmits: bool = False) -> Message:
        """The oldest queued message (retransmits dropped first if asked); WouldBlock if none."""
        q = self._queue
        while q:
            msg = q.popleft()
            if skip_retransmits and msg.kind is _RETRANSMIT:
                continue
            self._consume(msg)
            return msg
        raise WouldBlock("no message queued")

    def _consume(self: ConnectionCore, msg: Message) -> None:
        """A message read by itself also reads its in-order bytes from the stream."""
        if not msg.payload or self._read_seq is None:
            return
        d = seq_diff(msg.seq + (1 if int(msg.flags) & _F_SYN else 0), self._read_seq)
        end = d + len(msg.payload)
        if d <= 0 < end:
            n = sum(map(len, self._take_front(end)))
            self._read_seq = seq_add(self._read_seq, n)

    def _take_front(self: ConnectionCore, n: int) -> list[bytes]:
        """The pieces of the first ``n`` unread bytes (fewer if fewer are there), taken off."""
        chunks, out, got, i = self._stream, [], 0, 0
        while got < n and i < len(chunks):
            piece = chunks[i]
            if got + len(piece) <= n:
                out.append(piece)
                got += len(piece)
                i += 1
            else:
                out.append(piece[: n - got])
                chunks[i] = piece[n - got :]
                got = n
        del chunks[:i]
        self._stream_len -= got
        return out

    def unread(self: ConnectionCore, data: bytes) -> None:
        """Put ``data`` (just taken with :meth:`read_stream`) back at the front of the
        unread stream: a reader that was cancelled loses nothing."""
        if data:
            self._stream.insert(0, bytes(data))
            self._stream_len += len(data)
            if self._read_seq is not None:
                self._read_seq = seq_add(self._read_seq, -len(data))

    def read_bytes(self: ConnectionCore, n: int) -> bytes:
        """The first ``n`` unread in-order bytes (fewer if fewer are there); queued
        messages stay (they are read with the stream only by :meth:`read_stream`)."""
        data = b"".join(self._take_front(n))
        if self._read_seq is not None:
            self._read_seq = seq_add(self._read_seq, len(data))
        return data

    def read_stream(self: ConnectionCore) -> bytes:
        """All in-order payload not read yet; the message queue is emptied with it."""
        return b"".join(self.read_stream_pieces())

    def read_stream_pieces(self: ConnectionCore) -> list[bytes]:
        """:meth:`read_stream` as the pieces the segments brought, not joined: a reader
        that gathers a long transfer joins them once, at its end."""
        pieces, self._stream = self._stream, []
        n, self._stream_len = self._stream_len, 0
        if self._read_seq is not None:
            self._read_seq = seq_add(self._read_seq, n)
        self._queue.clear()
        return pieces

    def stream_available(self: ConnectionCore) -> int:
        return self._stream_len
