"""TCP sockets of a namespace as the kernel lists them (NETLINK_SOCK_DIAG).

TCP_INFO only reads a socket the test holds.  Two states live elsewhere on
Linux: a passive open's SYN-RECEIVED is a request socket (TCP_NEW_SYN_RECV)
with no file descriptor, and TIME-WAIT is a timewait socket (the user's
socket reads CLOSED once the connection enters it).  sock_diag lists both.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
from dataclasses import dataclass

from ._errors import TcpemuError
from ._netns import run_in_netns
from ._state import TcpState
from .tcpinfo import state_from_linux
from .wire import IPAddress

__all__ = ["DiagSocket", "tcp_sockets", "find_tcp_socket"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
ALL_STATES = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")
_REQ = struct.Struct("=BBBxI")  # family, protocol, ext, pad, states
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order); if + cookie follow
_MSG_HEAD = struct.Struct("=BBBB")  # family, state, timer, retrans
_MSG_TAIL = struct.Struct("=IIIII")  # expires, rqueue, wqueue, uid, inode


@dataclass(frozen=True, slots=True)
class DiagSocket:
    """One TCP socket as sock_diag reports it."""

    state: TcpState
    linux_state: int
    local: tuple[IPAddress, int]
    remote: tuple[IPAddress, int]
    inode: int


def _dump(family: int, states: int) -> list[DiagSocket]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.bind((0, 0))
        req = _REQ.pack(family, socket.IPPROTO_TCP, 0, states) + b"\x00" * 48
        seq = 1
        nl.send(
            _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
            + req
        )
        out: list[DiagSocket] = []
        addr_len = 4 if family == socket.AF_INET else 16
        while True:
            data = nl.recv(1 << 16)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
                if length < _NLMSGHDR.size:
                    raise TcpemuError(f"sock_diag: bad netlink message length {length}")
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    (err,) = struct.unpack_from("=i", data, off + _NLMSGHDR.size)
                    raise TcpemuError(f"sock_diag dump failed: {os.strerror(-err)}")
                body = off + _NLMSGHDR.size
                _fam, state, _timer, _retrans = _MSG_HEAD.unpack_from(data, body)
                sport, dport, src, dst = _SOCKID.unpack_from(data, body + 4)
                *_, inode = _MSG_TAIL.unpack_from(data, body + 4 + 48)
                out.append(
                    DiagSocket(
                        state=state_from_linux(state),
                        linux_state=state,
                        local=(ipaddress.ip_address(src[:addr_len]), sport),
                        remote=(ipaddress.ip_address(dst[:addr_len]), dport),
                        inode=inode,
                    )
                )
                off += (length + 3) & ~3


def tcp_sockets(
    netns: str | None, *, family: int = socket.AF_INET, states: int = ALL_STATES
) -> list[DiagSocket]:
    """Every TCP socket of ``family`` in namespace ``netns`` (request and timewait sockets included).

    Blocking: from trio, call it through ``trio.to_thread.run_sync``.
    """
    return run_in_netns(netns, _dump, family, states)


def find_tcp_socket(
    netns: str | None, local: tuple[str | IPAddress, int], remote: tuple[str | IPAddress, int]
) -> DiagSocket | None:
    """The socket of one connection (by its 4-tuple, seen from the namespace), or None.

    A user socket whose connection went on to TIME-WAIT is still listed, as
    CLOSED, beside its timewait socket: the live one (not CLOSED) wins.
    """
    lip, lport = ipaddress.ip_address(local[0]), local[1]
    rip, rport = ipaddress.ip_address(remote[0]), remote[1]
    family = socket.AF_INET if lip.version == 4 else socket.AF_INET6
    found = [
        e for e in tcp_sockets(netns, family=family) if e.local == (lip, lport) and e.remote == (rip, rport)
    ]
    found.sort(key=lambda e: e.state is TcpState.CLOSED)
    return found[0] if found else None
