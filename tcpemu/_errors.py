"""The one exception tree of tcpemu, rooted at :class:`TcpemuError`.

Messages say what was expected and what happened instead.  Local misuse
raises; misbehaviour of the remote peer is data (counters, message kinds)
and raises only where a caller waits for something the peer broke.
"""

from __future__ import annotations

__all__ = [
    "TcpemuError",
    "MalformedFrameError",
    "UsageError",
    "WouldBlock",
    "TcpemuTimeoutError",
    "ConnectionClosedError",
    "ConnectionBrokenError",
    "EngineBrokenError",
    "LabError",
    "PrivilegeError",
]


class TcpemuError(Exception):
    """Base class of every error tcpemu raises on purpose."""


class MalformedFrameError(TcpemuError):
    """A frame from an untrusted source could not be parsed.

    ``reason`` is a short stable token (for counters), the message says more.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"malformed frame ({reason}){': ' + detail if detail else ''}")


class UsageError(TcpemuError, ValueError):
    """The caller asked for something that cannot be done (bad argument, wrong state)."""


class WouldBlock(TcpemuError):
    """An ``*_nowait`` call found nothing to return."""


class TcpemuTimeoutError(TcpemuError, TimeoutError):
    """A ``timeout=`` elapsed; the message says what was awaited and what arrived."""


class ConnectionClosedError(TcpemuError):
    """This side closed (destroyed) the emulated connection or its engine."""


class ConnectionBrokenError(TcpemuError):
    """The peer broke the connection (a RST arrived) while something was awaited."""


class EngineBrokenError(TcpemuError):
    """The engine's packet pump stopped on an I/O error; nothing more arrives."""


class LabError(TcpemuError):
    """Building or tearing down a test lab failed."""


class PrivilegeError(TcpemuError, PermissionError):
    """The process lacks a capability it needs; the message names it (run as root)."""


# Tracebacks and pytest reports name an exception by its __module__: show the
# public name users import and catch (tcpemu.UsageError), not this module's.
for _cls in (
    TcpemuError,
    MalformedFrameError,
    UsageError,
    WouldBlock,
    TcpemuTimeoutError,
    ConnectionClosedError,
    ConnectionBrokenError,
    EngineBrokenError,
    LabError,
    PrivilegeError,
):
    _cls.__module__ = "tcpemu"
del _cls
