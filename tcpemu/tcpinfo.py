"""Read a kernel socket's TCP state (getsockopt TCP_INFO) and wait for a state.

Waiting polls TCP_INFO: the kernel offers no event for a state change, so
:func:`wait_tcp_state` reads the state at a short interval until it matches,
bounded by ``timeout``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from ._errors import TcpemuTimeoutError, UsageError
from ._state import TcpState

__all__ = ["TcpInfo", "tcp_info", "tcp_state", "state_from_linux", "wait_tcp_state", "wait_tcp_info"]

# Linux's state numbers (include/net/tcp_states.h), as tcpi_state and sock_diag give them
_LINUX_STATES: dict[int, TcpState] = {
    1: TcpState.ESTABLISHED,
    2: TcpState.SYN_SENT,
    3: TcpState.SYN_RECEIVED,
    4: TcpState.FIN_WAIT_1,
    5: TcpState.FIN_WAIT_2,
    6: TcpState.TIME_WAIT,
    7: TcpState.CLOSED,
    8: TcpState.CLOSE_WAIT,
    9: TcpState.LAST_ACK,
    10: TcpState.LISTEN,
    11: TcpState.CLOSING,
    12: TcpState.SYN_RECEIVED,  # TCP_NEW_SYN_RECV: a request sock, SYN-RECEIVED on the wire
}


def state_from_linux(tcpi_state: int) -> TcpState:
    """Map Linux ``tcpi_state`` to the RFC state (TCP_NEW_SYN_RECV reads as SYN-RECEIVED)."""
    try:
        return _LINUX_STATES[tcpi_state]
    except KeyError:
        raise UsageError(f"unknown Linux TCP state number {tcpi_state}") from None


# struct tcp_info (include/uapi/linux/tcp.h): 8 one-byte fields, then u32s
# from tcpi_rto to tcpi_total_retrans.
_TCP_INFO = struct.Struct("=8B24I")
_U32_FIELDS = (
    "rto", "ato", "snd_mss", "rcv_mss", "unacked", "sacked", "lost", "retrans", "fackets",
    "last_data_sent", "last_ack_sent", "last_data_recv", "last_ack_recv", "pmtu",
    "rcv_ssthresh", "rtt", "rttvar", "snd_ssthresh", "snd_cwnd", "advmss", "reordering",
    "rcv_rtt", "rcv_space", "total_retrans",
)  # fmt: skip


class _HasGetsockopt(Protocol):
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...


@dataclass(frozen=True, slots=True)
class TcpInfo:
    """The fields of Linux ``struct tcp_info`` that tests use (times in microseconds)."""

    state: TcpState
    linux_state: int
    ca_state: int
    retransmits: int
    probes: int
    backoff: int
    options: int
    snd_wscale: int
    rcv_wscale: int
    rto: int
    ato: int
    snd_mss: int
    rcv_mss: int
    unacked: int
    sacked: int
    lost: int
    retrans: int
    fackets: int
    last_data_sent: int
    last_ack_sent: int
    last_data_recv: int
    last_ack_recv: int
    pmtu: int
    rcv_ssthresh: int
    rtt: int
    rttvar: int
    snd_ssthresh: int
    snd_cwnd: int
    advmss: int
    reordering: int
    rcv_rtt: int
    rcv_space: int
    total_retrans: int


def tcp_info(sock: _HasGetsockopt) -> TcpInfo:
    """TCP_INFO of a TCP socket (stdlib or trio)."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(raw) < _TCP_INFO.size:
        raise OSError(f"TCP_INFO returned {len(raw)} bytes, expected at least {_TCP_INFO.size}")
    v = _TCP_INFO.unpack_from(raw)
    state, ca_state, retransmits, probes, backoff, options, wscale, _ = v[:8]
    return TcpInfo(
        state_from_linux(state),
        state,
        ca_state,
        retransmits,
        probes,
        backoff,
        options,
        wscale & 0x0F,
        wscale >> 4,
        **dict(zip(_U32_FIELDS, v[8:], strict=True)),
    )


def tcp_state(sock: _HasGetsockopt) -> TcpState:
    return tcp_info(sock).state


async def _poll(
    sock: _HasGetsockopt, predicate: Callable[[TcpInfo], bool], timeout: float, interval: float
) -> tuple[TcpInfo, bool]:
    """TCP_INFO read every ``interval`` s until ``predicate`` holds (True) or ``timeout`` passes (False)."""
    info = tcp_info(sock)
    with trio.move_on_after(timeout):
        while not predicate(info):
            await trio.sleep(interval)
            info = tcp_info(sock)
        return info, True
    return info, False


async def wait_tcp_state(
    sock: _HasGetsockopt, state: TcpState | str, *, timeout: float, interval: float = 0.001
) -> TcpInfo:
    """Return TCP_INFO once the socket is in ``state``; TcpemuTimeoutError after ``timeout`` s."""
    want = TcpState.parse(state) if isinstance(state, str) else state
    seen: list[TcpState] = []

    def reached(info: TcpInfo) -> bool:
        if not seen or seen[-1] is not info.state:
            seen.append(info.state)
        return info.state is want

    info, ok = await _poll(sock, reached, timeout, interval)
    if ok:
        return info
    raise TcpemuTimeoutError(
        f"socket not in {want.name} within {timeout} s; states seen: " + " -> ".join(s.name for s in seen)
    )


async def wait_tcp_info(
    sock: _HasGetsockopt,
    predicate: Callable[[TcpInfo], bool],
    *,
    timeout: float,
    what: str = "condition",
    interval: float = 0.001,
) -> TcpInfo:
    """Return TCP_INFO once ``predicate(info)`` holds; TcpemuTimeoutError after ``timeout`` s."""
    info, ok = await _poll(sock, predicate, timeout, interval)
    if ok:
        return info
    raise TcpemuTimeoutError(f"TCP_INFO {what} not seen within {timeout} s; last: {info}")
