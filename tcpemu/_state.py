"""TCP's states and the one table of moves between them, as data (RFC 9293 names).

Also the sequence-number arithmetic and the numbering sentinels (AUTO,
QUIET) that every layer above speaks.  No I/O, no clock.
"""

from __future__ import annotations

import enum
from typing import Final

from ._errors import UsageError

__all__ = [
    "SEQ_MOD",
    "DEFAULT_WINDOW",
    "DEFAULT_MSS",
    "seq_add",
    "seq_diff",
    "TcpState",
    "StateEvent",
    "TRANSITIONS",
    "Mode",
    "SERVER",
    "CLIENT",
    "Auto",
    "Quiet",
    "AUTO",
    "QUIET",
]

SEQ_MOD: Final = 1 << 32
DEFAULT_WINDOW: Final = 65535
DEFAULT_MSS: Final = 1460


def seq_add(a: int, b: int) -> int:
    return (a + b) % SEQ_MOD


def seq_diff(a: int, b: int) -> int:
    """a - b in sequence space, as a signed 32-bit number."""
    d = (a - b) % SEQ_MOD
    return d - SEQ_MOD if d >= 1 << 31 else d


class TcpState(enum.Enum):
    """The eleven TCP states, with RFC 9293 names (values are the RFC spelling)."""

    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"

    # Members are singletons compared by identity: hash them so too.  Enum's
    # own __hash__ is Python code, and TRANSITIONS is looked up by (state,
    # event) for most segments.
    __hash__ = object.__hash__

    @classmethod
    def parse(cls, name: str) -> TcpState:
        """Accept RFC ("FIN-WAIT-1"), enum ("FIN_WAIT_1") and Linux ("FIN_WAIT1", "SYN_RECV") spellings."""
        key = name.strip().upper().replace("-", "_")
        key = _ALIASES.get(key, key)
        try:
            return cls[key]
        except KeyError:
            raise UsageError(
                f"unknown TCP state {name!r}; expected one of {', '.join(s.name for s in cls)}"
            ) from None


_ALIASES: Final = {
    "SYN_RECV": "SYN_RECEIVED",
    "FIN_WAIT1": "FIN_WAIT_1",
    "FIN_WAIT2": "FIN_WAIT_2",
    "CLOSE": "CLOSED",
}


class StateEvent(enum.Enum):
    """What moves the emulated endpoint between states."""

    PASSIVE_OPEN = "passive open"
    SEND_SYN = "send SYN"
    RECV_SYN = "receive SYN"
    SEND_SYN_ACK = "send SYN-ACK"
    RECV_SYN_ACK = "receive SYN-ACK"
    SEND_ACK_OF_SYN = "send ACK of SYN"
    RECV_ACK_OF_SYN = "receive ACK of SYN"
    SEND_FIN = "send FIN"
    RECV_FIN = "receive FIN"
    RECV_ACK_OF_FIN = "receive ACK of FIN"
    SEND_RST = "send RST"
    RECV_RST = "receive RST"
    TIME_WAIT_DONE = "2MSL timeout"

    __hash__ = object.__hash__  # as TcpState's


S, E = TcpState, StateEvent
TRANSITIONS: Final[dict[tuple[TcpState, StateEvent], TcpState]] = {
    (S.CLOSED, E.PASSIVE_OPEN): S.LISTEN,
    (S.CLOSED, E.SEND_SYN): S.SYN_SENT,
    (S.LISTEN, E.SEND_SYN): S.SYN_SENT,
    # The emulator answers a SYN only when the test asks (wait_open), so a
    # received SYN is recorded and the move happens with the SYN-ACK sent.
    (S.LISTEN, E.SEND_SYN_ACK): S.SYN_RECEIVED,
    (S.SYN_SENT, E.RECV_SYN): S.SYN_RECEIVED,  # simultaneous open
    (S.SYN_SENT, E.SEND_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RECEIVED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.FIN_WAIT_1, E.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECV_FIN): S.CLOSING,
    (S.FIN_WAIT_2, E.RECV_FIN): S.TIME_WAIT,
    (S.CLOSING, E.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.CLOSE_WAIT, E.SEND_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.TIME_WAIT, E.TIME_WAIT_DONE): S.CLOSED,
}
# A reset, sent or accepted, ends every state but CLOSED and LISTEN's wait.
for _state in TcpState:
    if _state is not S.CLOSED:
        TRANSITIONS[(_state, E.SEND_RST)] = S.CLOSED
        TRANSITIONS[(_state, E.RECV_RST)] = S.CLOSED
del S, E, _state


class Mode(enum.Enum):
    """SERVER sends nothing until the peer's SYN is answered; CLIENT sends the SYN."""

    SERVER = "server"
    CLIENT = "client"


SERVER: Final = Mode.SERVER
CLIENT: Final = Mode.CLIENT


class Auto(enum.Enum):
    AUTO = "AUTO"

    def __repr__(self) -> str:
        return "tcpemu.AUTO"


class Quiet(enum.Enum):
    QUIET = "QUIET"

    def __repr__(self) -> str:
        return "tcpemu.QUIET"


AUTO: Final = Auto.AUTO
"""seq/ack filled from the connection's state (seq advances the send state)."""
QUIET: Final = Quiet.QUIET
"""seq/ack left unfilled: the field is 0 (and for ack, the ACK flag is off)."""
