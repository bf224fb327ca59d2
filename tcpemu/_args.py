"""Argument checks of the async API: a UsageError naming the argument, the value and
what is allowed (never a raw exception from a dependency)."""

from __future__ import annotations

import ipaddress
import math

import trio

from ._errors import UsageError
from .wire import IPAddress, TcpOption


def _addr(value: object, what: str) -> IPAddress:
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return value
    if not isinstance(value, str):
        raise UsageError(f"{what}: an IP address is a str like '198.18.0.2', got {value!r}")
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{what}: not an IP address: {value!r}") from None


def _endpoint(what: str, value: object, *, port_optional: bool) -> tuple[IPAddress, int | None]:
    """An (address, port) pair from the caller, checked; port None only where allowed."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise UsageError(f"{what} must be an (address, port) pair, got {value!r}")
    ip, port = value
    if port is None and port_optional:
        return _addr(ip, what), None
    _check_int(f"{what} port", port, 1, 0xFFFF)
    return _addr(ip, what), port


def _check_int(what: str, value: object, low: int, high: int) -> None:
    """An int (a bool is not one here) in low..high, else UsageError naming it."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise UsageError(f"{what} must be an int {low}..{high}, got {value!r}")


def _check_bool(what: str, value: object) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{what} must be True or False, got {value!r}")


def _check_timeout(what: str, value: object, *, positive: bool = False) -> None:
    """A number of seconds: finite (or inf), not NaN, >= 0 (> 0 if ``positive``)."""
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or math.isnan(value)
        or value < 0
        or (positive and value == 0)
    ):
        raise UsageError(
            f"{what} must be a number of seconds {'> 0' if positive else '>= 0'}"
            f"{'' if positive else ' or None'}, got {value!r}"
        )


def _deadline(what: str, timeout: float | None) -> float:
    """The trio deadline of a ``timeout=`` argument (None: none)."""
    if timeout is None:
        return math.inf
    _check_timeout(f"{what}: timeout", timeout)
    return trio.current_time() + timeout


def _check_options(what: str, options: object) -> tuple[TcpOption, ...]:
    if not isinstance(options, (list, tuple)) or not all(isinstance(o, TcpOption) for o in options):
        raise UsageError(
            f"{what}: options must be a list of tcpemu.TcpOption "
            f"(raw option bytes: conn.segment(options=b'...')), got {options!r}"
        )
    return tuple(options)
