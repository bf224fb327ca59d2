"""Argument checks of the core: a UsageError naming the argument, the value and what is allowed."""

from __future__ import annotations

from ._errors import UsageError
from ._state import SEQ_MOD
from .wire import TcpOption


def _check_port(what: str, port: int) -> None:
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port <= 0xFFFF:
        raise UsageError(f"{what} must be an int 1..65535, got {port!r}")


def check_rto(rto: object) -> None:
    """A retransmission timeout: a finite number of seconds > 0."""
    if not isinstance(rto, (int, float)) or isinstance(rto, bool) or not 0 < rto < float("inf"):
        raise UsageError(f"rto must be a number of seconds > 0, got {rto!r}")


def _check_time(now: object) -> None:
    if not isinstance(now, (int, float)) or isinstance(now, bool) or now != now:
        raise UsageError(f"now must be a number of seconds (the caller's clock), got {now!r}")


def _check_options(options: object) -> tuple[TcpOption, ...]:
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, TcpOption) for o in options):
        raise UsageError(
            "options must be a list of tcpemu.TcpOption (raw bytes: conn.segment(options=...)), "
            f"got {options!r}"
        )
    return tuple(options)


def _check_seq(what: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < SEQ_MOD:
        raise UsageError(
            f"{what} must be a 32-bit sequence number (0..2**32-1), AUTO or QUIET, got {value!r}"
        )
