"""tcpemu: TCP socket emulation for async Python test suites.

A test drives a TCP endpoint packet by packet over a real Ethernet
interface against the TCP stack under test.  See README.md and docs/.
"""

from __future__ import annotations

from ._engine import Connection, Engine, EngineStatistics, Listener, ListenerStatistics
from ._errors import (
    ConnectionBrokenError,
    ConnectionClosedError,
    EngineBrokenError,
    LabError,
    MalformedFrameError,
    PrivilegeError,
    TcpemuError,
    TcpemuTimeoutError,
    UsageError,
    WouldBlock,
)
from ._io import L3_MAC, MemoryLink, PacketLink, PacketRing, TunLink
from ._open import open_engine
from .core import (
    AUTO,
    CLIENT,
    QUIET,
    SERVER,
    ConnectionCore,
    ConnectionStatistics,
    Message,
    Mode,
    SegmentKind,
    TcpState,
)
from .tcpinfo import TcpInfo, tcp_info, tcp_state, wait_tcp_info, wait_tcp_state
from .wire import Frame, Segment, TcpFlags, TcpOption

__version__ = "0.1.0"

__all__ = [
    "AUTO",
    "CLIENT",
    "QUIET",
    "SERVER",
    "Connection",
    "ConnectionBrokenError",
    "ConnectionClosedError",
    "ConnectionCore",
    "ConnectionStatistics",
    "Engine",
    "EngineBrokenError",
    "EngineStatistics",
    "Frame",
    "L3_MAC",
    "LabError",
    "Listener",
    "ListenerStatistics",
    "MalformedFrameError",
    "MemoryLink",
    "Message",
    "Mode",
    "PacketLink",
    "PacketRing",
    "PrivilegeError",
    "Segment",
    "SegmentKind",
    "TcpFlags",
    "TcpInfo",
    "TcpOption",
    "TcpState",
    "TcpemuError",
    "TcpemuTimeoutError",
    "TunLink",
    "UsageError",
    "WouldBlock",
    "open_engine",
    "tcp_info",
    "tcp_state",
    "wait_tcp_info",
    "wait_tcp_state",
    "__version__",
]
