"""The engine's neighbour responder: ARP and NDP answered for emulated addresses,
and questions asked for a CLIENT without the peer's MAC.

``open_engine`` owns a nursery that runs the pump.  The pump waits for the
link to be readable, drains a batch of frames, classifies each one at fixed
offsets, hands it to the matching connection's sans-IO core and wakes that
connection's waiters.  It never blocks on a consumer: each core's queue is
bounded and an overflow is counted and logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from . import neighbour
from ._args import _addr, _check_int, _check_timeout
from ._errors import (
    MalformedFrameError,
    TcpemuTimeoutError,
    UsageError,
)
from .wire import (
    IPAddress,
    format_mac,
    parse_mac,
)

if TYPE_CHECKING:
    from ._engine import Engine

__all__ = ["NeighbourResponder", "neighbour_frame"]


def neighbour_frame(frame: bytes) -> bool:
    """ARP, or IPv6 carrying ICMPv6 (neighbour discovery lives there)."""
    ethertype = frame[12:14]
    return ethertype == b"\x08\x06" or (ethertype == b"\x86\xdd" and frame[20] == 58)


class NeighbourResponder:
    """A mixin of :class:`~tcpemu.Engine` (its state lives in the engine)."""

    def _maybe_answer(self: Engine, addr: IPAddress, mac: bytes) -> None:
        if self._l3:
            return  # no ARP or NDP where there is no link header
        answer = self.answer_neighbours
        if answer is None:  # by default: for addresses no host of this namespace owns
            answer = addr not in self._owned
        if answer and addr not in self._neighbour_macs:
            self._neighbour_macs[addr] = mac
            self._update_filter()

    async def resolve(
        self,
        ip: str | IPAddress,
        *,
        local_ip: str | IPAddress,
        local_mac: str | bytes,
        timeout: float = 1.0,
        attempts: int = 3,
    ) -> str:
        """The MAC of ``ip``, asked for with ARP (IPv4) or a neighbour solicitation (IPv6)
        sent from ``local_ip``/``local_mac``; ``attempts`` questions ``timeout`` s apart."""
        self._check_running("resolve")
        target, source, mac = _addr(ip, "resolve"), _addr(local_ip, "local_ip"), parse_mac(local_mac)
        _check_timeout("resolve: timeout", timeout, positive=True)
        _check_int("resolve: attempts", attempts, 1, 100)
        if target.version != source.version:
            raise UsageError(f"resolve: {target} and {source} differ in IP version")
        event, answer = trio.Event(), []
        self._resolving[source] = (event, answer)
        self._update_filter()
        try:
            for _ in range(attempts):
                if target.version == 4:
                    frame = neighbour.arp_request(mac, source, target)
                else:
                    frame = neighbour.neighbour_solicitation(mac, source, target)  # type: ignore[arg-type]
                self._transmit([frame])
                with trio.move_on_after(timeout):
                    while True:
                        await event.wait()
                        if answer and answer[0][0] == target:
                            return format_mac(answer[0][1])
                        event = trio.Event()
                        self._resolving[source] = (event, answer)
                        answer.clear()
        finally:
            del self._resolving[source]
            if not self._closed:
                self._update_filter()
        raise TcpemuTimeoutError(
            f"resolve: no answer for {target} after {attempts} questions {timeout} s apart"
        )

    def _neighbour(self: Engine, frame: bytes) -> None:
        """An ARP or NDP frame the filter let through: answer it, or take it as an answer."""
        try:
            msg = neighbour.parse_neighbour_untrusted(frame)
        except MalformedFrameError as exc:
            self._malformed[exc.reason] += 1
            return
        if msg is None:
            self._unmatched += 1
            return
        if msg.request:
            mac = self._neighbour_macs.get(msg.target)
            if mac is None:
                self._unmatched += 1
                return
            if msg.target.version == 4:
                reply = neighbour.arp_reply(mac, msg.target, msg.sender_mac, msg.sender_ip)
            else:
                reply = neighbour.neighbour_advertisement(mac, msg.target, msg.sender_mac, msg.sender_ip)  # type: ignore[arg-type]
            self._neighbour_replies += 1
            self._emit(reply)
            return
        for source, (event, answer) in self._resolving.items():
            if source.version == msg.target.version:
                answer.append((msg.target, msg.sender_mac))
                event.set()
