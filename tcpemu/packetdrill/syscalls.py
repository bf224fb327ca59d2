"""System call lines: arguments evaluated, calls made on real sockets, results compared.

:class:`KernelSyscalls` is the handler of the kernel target: each call
runs on a real socket made inside the IUT's network namespace.  Any other
handler (for the ``--link`` target) has the same shape: one method per
call, named as the call, taking the evaluated arguments, returning the
call's result (an int) or ``(result, output)`` for the calls that fill in
a value the script checks (getsockopt, ioctl, poll), and raising
:class:`OSError` with an errno for a call that fails.  See
docs/packetdrill.md for a worked example.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import ipaddress
import os
import queue
import select
import socket
import struct
import termios
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Final

from .._netns import enter_netns
from .parse import Call, Struct, Symbol, SyscallEvent, Unsupported

__all__ = [
    "CONSTANTS",
    "Evaluator",
    "KernelSyscalls",
    "TCP_INFO_FIELDS",
    "compare_output",
    "errno_name",
    "read_tcp_info",
]

# Linux values the socket module does not carry under these names
_EXTRA: Final = {
    "SOL_TCP": socket.IPPROTO_TCP,
    "SOL_IP": 0,
    "SOL_IPV6": 41,
    "SIOCINQ": termios.FIONREAD,
    "SIOCOUTQ": termios.TIOCOUTQ,
    "SIOCOUTQNSD": 0x894B,
    "TCP_REPAIR": 19,
    "TCP_THIN_LINEAR_TIMEOUTS": 16,
    "TCP_THIN_DUPACK": 17,
    "TCP_TIMESTAMP": 24,
    "TCP_NOTSENT_LOWAT": 25,
    "TCP_CC_INFO": 26,
    "TCP_SAVE_SYN": 27,
    "TCP_SAVED_SYN": 28,
    "TCP_REPAIR_WINDOW": 29,
    "TCP_FASTOPEN_CONNECT": 30,
    "TCP_ULP": 31,
    "TCP_FASTOPEN_KEY": 33,
    "TCP_FASTOPEN_NO_COOKIE": 34,
    "TCP_ZEROCOPY_RECEIVE": 35,
    "TCP_INQ": 36,
    "TCP_TX_DELAY": 37,
    "SO_ZEROCOPY": 60,
    "SO_MAX_PACING_RATE": 47,
    "SO_TXTIME": 61,
    "MSG_ZEROCOPY": 0x4000000,
    "MSG_FASTOPEN": 0x20000000,
    "IPV6_V6ONLY": 26,
    "O_RDWR": os.O_RDWR,
    "O_RDONLY": os.O_RDONLY,
    "O_WRONLY": os.O_WRONLY,
    "O_NONBLOCK": os.O_NONBLOCK,
    "F_GETFL": fcntl.F_GETFL,
    "F_SETFL": fcntl.F_SETFL,
    "F_GETFD": fcntl.F_GETFD,
    "F_SETFD": fcntl.F_SETFD,
    "FD_CLOEXEC": fcntl.FD_CLOEXEC,
    "POLLIN": select.POLLIN,
    "POLLPRI": select.POLLPRI,
    "POLLOUT": select.POLLOUT,
    "POLLERR": select.POLLERR,
    "POLLHUP": select.POLLHUP,
    "POLLNVAL": select.POLLNVAL,
    "POLLRDNORM": select.POLLRDNORM,
    "POLLRDBAND": select.POLLRDBAND,
    "POLLWRNORM": select.POLLWRNORM,
    "POLLWRBAND": select.POLLWRBAND,
    "POLLMSG": 0x400,
    "POLLRDHUP": 0x2000,
    "NULL": 0,
    # tcpi_state and tcpi_ca_state values (include/net/tcp_states.h, include/uapi/linux/tcp.h)
    "TCP_ESTABLISHED": 1,
    "TCP_SYN_SENT": 2,
    "TCP_SYN_RECV": 3,
    "TCP_FIN_WAIT1": 4,
    "TCP_FIN_WAIT2": 5,
    "TCP_TIME_WAIT": 6,
    "TCP_CLOSE": 7,
    "TCP_CLOSE_WAIT": 8,
    "TCP_LAST_ACK": 9,
    "TCP_LISTEN": 10,
    "TCP_CLOSING": 11,
    "TCP_CA_Open": 0,
    "TCP_CA_Disorder": 1,
    "TCP_CA_CWR": 2,
    "TCP_CA_Recovery": 3,
    "TCP_CA_Loss": 4,
}
_PREFIXES: Final = ("AF_", "SOCK_", "IPPROTO_", "SOL_", "SO_", "TCP_", "MSG_", "SHUT_", "IP_", "IPV6_")


def _constants() -> dict[str, int]:
    out = {n: getattr(socket, n) for n in dir(socket) if n.startswith(_PREFIXES)}
    out = {n: int(v) for n, v in out.items() if isinstance(v, int)}
    out.update(_EXTRA)
    out.update({name: code for code, name in errno.errorcode.items()})  # SO_ERROR values: [ECONNREFUSED]
    return out


CONSTANTS: Final = _constants()


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


# struct tcp_info (include/uapi/linux/tcp.h) as far as 6.x kernels fill it
_TCP_INFO_LAYOUT: Final = (
    ("B", "state"), ("B", "ca_state"), ("B", "retransmits"), ("B", "probes"), ("B", "backoff"),
    ("B", "options"), ("B", "wscale"), ("B", "app_limited_bits"),
    ("I", "rto"), ("I", "ato"), ("I", "snd_mss"), ("I", "rcv_mss"), ("I", "unacked"), ("I", "sacked"),
    ("I", "lost"), ("I", "retrans"), ("I", "fackets"), ("I", "last_data_sent"), ("I", "last_ack_sent"),
    ("I", "last_data_recv"), ("I", "last_ack_recv"), ("I", "pmtu"), ("I", "rcv_ssthresh"), ("I", "rtt"),
    ("I", "rttvar"), ("I", "snd_ssthresh"), ("I", "snd_cwnd"), ("I", "advmss"), ("I", "reordering"),
    ("I", "rcv_rtt"), ("I", "rcv_space"), ("I", "total_retrans"),
    ("Q", "pacing_rate"), ("Q", "max_pacing_rate"), ("Q", "bytes_acked"), ("Q", "bytes_received"),
    ("I", "segs_out"), ("I", "segs_in"), ("I", "notsent_bytes"), ("I", "min_rtt"), ("I", "data_segs_in"),
    ("I", "data_segs_out"), ("Q", "delivery_rate"), ("Q", "busy_time"), ("Q", "rwnd_limited"),
    ("Q", "sndbuf_limited"), ("I", "delivered"), ("I", "delivered_ce"), ("Q", "bytes_sent"),
    ("Q", "bytes_retrans"), ("I", "dsack_dups"), ("I", "reord_seen"), ("I", "rcv_ooopack"), ("I", "snd_wnd"),
    ("I", "rcv_wnd"), ("I", "rehash"), ("H", "total_rto"), ("H", "total_rto_recoveries"),
    ("I", "total_rto_time"),
)  # fmt: skip
_PACKED: Final = ("wscale", "app_limited_bits")  # bytes of bit fields, split below
TCP_INFO_FIELDS: Final = (
    *(f"tcpi_{name}" for _, name in _TCP_INFO_LAYOUT if name not in _PACKED),
    "tcpi_snd_wscale",
    "tcpi_rcv_wscale",
    "tcpi_delivery_rate_app_limited",
    "tcpi_fastopen_client_fail",
)


def read_tcp_info(sock: socket.socket) -> dict[str, int]:
    """Every ``tcpi_*`` field the kernel fills in, by packetdrill's names."""
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512)
    out: dict[str, int] = {}
    offset = 0
    for code, name in _TCP_INFO_LAYOUT:
        size = struct.calcsize(code)
        offset += -offset % size  # natural alignment, as the C struct has it
        if offset + size > len(raw):
            break  # an older kernel: the fields it has
        (value,) = struct.unpack_from("=" + code, raw, offset)
        offset += size
        if name == "wscale":
            out["tcpi_snd_wscale"], out["tcpi_rcv_wscale"] = value & 0x0F, value >> 4
        elif name == "app_limited_bits":
            out["tcpi_delivery_rate_app_limited"] = value & 1
            out["tcpi_fastopen_client_fail"] = (value >> 1) & 3
        else:
            out[f"tcpi_{name}"] = value
    return out


class Evaluator:
    """System call arguments to Python values: symbols looked up, addresses mapped.

    ``addresses`` maps the addresses scripts name (packetdrill's defaults and
    the script's --local_ip/--remote_ip) to the ones the run uses.
    """

    def __init__(self, addresses: dict[str, str]) -> None:
        self.addresses = {str(ipaddress.ip_address(k)): v for k, v in addresses.items()}

    def __call__(self, value: object) -> object:
        if isinstance(value, Symbol):
            if value.name in CONSTANTS:
                return CONSTANTS[value.name]
            raise Unsupported(f"constant {value.name}")
        if isinstance(value, Call):
            args = [self(a) for a in value.args]
            if value.name == "|":
                return int(args[0]) | int(args[1])  # type: ignore[call-overload]
            if value.name in ("htons", "htonl", "ntohs", "ntohl"):
                return args[0]  # ports stay host integers: Python's socket calls take them so
            if value.name in ("inet_addr", "inet_pton"):
                text = str(args[-1])
                return self.map_address(text)
            raise Unsupported(f"function {value.name}() in arguments")
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, Struct):
            return {k: self(v) for k, v in value.fields}
        return value

    def map_address(self, text: str) -> str:
        try:
            key = str(ipaddress.ip_address(text))
        except ValueError:
            return text
        return self.addresses.get(key, key)


def compare_output(want: object, got: object, what: str) -> list[str]:
    """Differences between a value the script expects a call to fill in and what it filled in."""
    if want is ...:
        return []
    if isinstance(want, dict) and isinstance(got, dict):
        diffs = []
        for key, value in want.items():
            if key == "...":
                continue
            if key not in got:
                diffs.append(f"{what}: no field {key}")
            else:
                diffs += compare_output(value, got[key], f"{what}.{key}")
        return diffs
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            return [f"{what}: expected {len(want)} items, got {len(got)}"]
        diffs = []
        for i, (w, g) in enumerate(zip(want, got, strict=True)):
            diffs += compare_output(w, g, f"{what}[{i}]")
        return diffs
    if want != got:
        return [f"{what}: expected {want}, got {got}"]
    return []


def _iov_total(iov: object) -> int:
    if isinstance(iov, list):
        return sum(int(v.get("iov_len", 0)) if isinstance(v, dict) else 0 for v in iov)  # type: ignore[misc]
    return 0


class NetnsWorker:
    """One thread that entered a namespace once and makes sockets there on request.

    Entering a namespace takes milliseconds (a fresh thread and setns), too
    long for a script's clock; this thread pays it once, before time 0.
    """

    def __init__(self, netns: str | None) -> None:
        self._jobs: queue.Queue[tuple[Callable[[], object], Future[object]] | None] = queue.Queue()
        self._ready: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._serve, args=(netns,), name=f"tcpemu-pd-{netns}", daemon=True
        )
        self._thread.start()
        self._ready.result()

    def _serve(self, netns: str | None) -> None:
        try:
            if netns is not None:
                enter_netns(netns)
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(None)
        while (job := self._jobs.get()) is not None:
            fn, future = job
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed back to the caller's thread
                future.set_exception(exc)

    def call(self, fn: Callable[[], object]) -> object:
        future: Future[object] = Future()
        self._jobs.put((fn, future))
        return future.result()

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()


class KernelSyscalls:
    """System calls on real kernel sockets made in namespace ``netns``.

    ``family`` is what ``socket(..., ...)`` makes; ``bind_addr`` and
    ``connect_addr`` are what ``...`` stands for in bind() and connect().
    Calls block as the real ones do (the runner makes them on worker threads).
    """

    def __init__(
        self,
        netns: str | None,
        family: int,
        bind_addr: tuple[str, int],
        connect_addr: tuple[str, int],
    ) -> None:
        self.netns = netns
        self.family = family
        self.bind_addr = bind_addr
        self.connect_addr = connect_addr
        self.fds: dict[int, socket.socket] = {}
        self._worker = NetnsWorker(netns)
        self._order: dict[int, int] = {}  # fd -> when it was made, for current()
        self._counter = 0

    # ---------------------------------------------------------------- helpers

    def _sock(self, fd: object) -> socket.socket:
        if not isinstance(fd, int) or fd not in self.fds:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return self.fds[fd]

    def _addr(self, value: object, default: tuple[str, int]) -> tuple[str, int]:
        if value is ... or value is None:
            return default
        if isinstance(value, dict):
            port = value.get("sin_port", value.get("sin6_port", default[1]))
            ip = value.get("sin_addr", value.get("sin6_addr", default[0]))
            return (str(ip), int(port))  # type: ignore[call-overload]
        raise Unsupported(f"socket address {value!r}")

    def close_all(self) -> None:
        """Shut down and close every socket (a call blocked on one returns)."""
        for sock in list(self.fds.values()):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.fds.clear()
        self._worker.stop()

    def current(self) -> int | None:
        """The socket that %{ }% reads TCP_INFO from: the one made or accepted last."""
        return max(self.fds, key=lambda fd: self._order.get(fd, 0)) if self.fds else None

    def _register(self, fd: int, sock: socket.socket) -> None:
        self._counter += 1
        self._order[fd] = self._counter
        self.fds[fd] = sock

    def tcp_info(self, fd: int) -> dict[str, int]:
        return read_tcp_info(self._sock(fd))

    # ----------------------------------------------------------------- calls

    def socket(self, domain: object, type_: object, proto: object, *, expected_fd: int) -> int:
        family = self.family if domain is ... else int(domain)  # type: ignore[call-overload]
        kind = socket.SOCK_STREAM if type_ is ... else int(type_)  # type: ignore[call-overload]
        protocol = 0 if proto is ... else int(proto)  # type: ignore[call-overload]
        sock = self._worker.call(lambda: socket.socket(family, kind, protocol))
        assert isinstance(sock, socket.socket)
        if expected_fd in self.fds:
            self.fds.pop(expected_fd).close()
        self._register(expected_fd, sock)
        return expected_fd

    def bind(self, fd: object, addr: object, _len: object) -> int:
        self._sock(fd).bind(self._addr(addr, self.bind_addr))
        return 0

    def listen(self, fd: object, backlog: object) -> int:
        self._sock(fd).listen(int(backlog))  # type: ignore[call-overload]
        return 0

    def accept(self, fd: object, _addr: object, _len: object, *, expected_fd: int) -> int:
        new, _ = self._sock(fd).accept()
        self._register(expected_fd, new)
        return expected_fd

    def connect(self, fd: object, addr: object, _len: object) -> int:
        rc = self._sock(fd).connect_ex(self._addr(addr, self.connect_addr))
        if rc:
            raise OSError(rc, os.strerror(rc))
        return 0

    def read(self, fd: object, _buf: object, count: object) -> int:
        return len(os.read(self._sock(fd).fileno(), int(count)))  # type: ignore[call-overload]

    def recv(self, fd: object, _buf: object, count: object, flags: object) -> int:
        return len(self._sock(fd).recv(int(count), int(flags)))  # type: ignore[call-overload]

    def recvfrom(self, fd: object, buf: object, count: object, flags: object, *_: object) -> int:
        return self.recv(fd, buf, count, flags)

    def write(self, fd: object, _buf: object, count: object) -> int:
        return os.write(self._sock(fd).fileno(), bytes(int(count)))  # type: ignore[call-overload]

    def send(self, fd: object, _buf: object, count: object, flags: object) -> int:
        return self._sock(fd).send(bytes(int(count)), int(flags))  # type: ignore[call-overload]

    def sendto(self, fd: object, buf: object, count: object, flags: object, *_: object) -> int:
        return self.send(fd, buf, count, flags)

    def writev(self, fd: object, iov: object, _count: object) -> int:
        return self._sock(fd).sendmsg([bytes(_iov_total(iov))])

    def readv(self, fd: object, iov: object, _count: object) -> int:
        return len(self._sock(fd).recv(_iov_total(iov)))

    def sendmsg(self, fd: object, msg: object, flags: object) -> int:
        if not isinstance(msg, dict):
            raise Unsupported("sendmsg() without a msghdr")
        if msg.get("msg_control", ...) not in (..., [], 0, None):
            raise Unsupported("sendmsg() with control messages")
        return self._sock(fd).sendmsg([bytes(_iov_total(msg.get("msg_iov")))], [], int(flags))  # type: ignore[call-overload]

    def recvmsg(self, fd: object, msg: object, flags: object) -> int:
        if not isinstance(msg, dict):
            raise Unsupported("recvmsg() without a msghdr")
        data, _, _, _ = self._sock(fd).recvmsg(_iov_total(msg.get("msg_iov")), 0, int(flags))  # type: ignore[call-overload]
        return len(data)

    def close(self, fd: object) -> int:
        self._sock(fd).close()
        del self.fds[fd]  # type: ignore[arg-type]
        return 0

    def shutdown(self, fd: object, how: object) -> int:
        self._sock(fd).shutdown(int(how))  # type: ignore[call-overload]
        return 0

    def setsockopt(self, fd: object, level: object, name: object, value: object, _len: object) -> int:
        sock = self._sock(fd)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], int):
            sock.setsockopt(int(level), int(name), value[0])  # type: ignore[call-overload]
        elif isinstance(value, int):
            sock.setsockopt(int(level), int(name), value)  # type: ignore[call-overload]
        elif isinstance(value, str):
            sock.setsockopt(int(level), int(name), value.encode())  # type: ignore[call-overload]
        elif isinstance(value, dict) and set(value) == {"onoff", "linger"}:
            packed = struct.pack("ii", int(value["onoff"]), int(value["linger"]))  # type: ignore[call-overload]
            sock.setsockopt(int(level), int(name), packed)  # type: ignore[call-overload]
        else:
            raise Unsupported(f"setsockopt() value {value!r}")
        return 0

    def getsockopt(
        self, fd: object, level: object, name: object, value: object, _len: object
    ) -> tuple[int, object]:
        sock = self._sock(fd)
        lvl, opt = int(level), int(name)  # type: ignore[call-overload]
        if lvl == socket.IPPROTO_TCP and opt == socket.TCP_INFO:
            return 0, read_tcp_info(sock)
        if isinstance(value, list):
            return 0, [sock.getsockopt(lvl, opt)]
        if isinstance(value, str):
            return 0, sock.getsockopt(lvl, opt, 64).split(b"\0", 1)[0].decode()
        if isinstance(value, dict) and set(value) == {"onoff", "linger"}:
            onoff, linger = struct.unpack("ii", sock.getsockopt(lvl, opt, 8))
            return 0, {"onoff": onoff, "linger": linger}
        if isinstance(value, int) or value is ...:
            return 0, sock.getsockopt(lvl, opt)
        raise Unsupported(f"getsockopt() value {value!r}")

    def fcntl(self, fd: object, cmd: object, arg: object = 0) -> int:
        return fcntl.fcntl(self._sock(fd).fileno(), int(cmd), int(arg))  # type: ignore[call-overload]

    def ioctl(self, fd: object, request: object, value: object) -> tuple[int, object]:
        buf = fcntl.ioctl(self._sock(fd).fileno(), int(request), struct.pack("i", 0))  # type: ignore[call-overload]
        (n,) = struct.unpack("i", buf)
        return 0, [n] if isinstance(value, list) else n

    def poll(self, fds: object, _nfds: object, timeout: object) -> tuple[int, object]:
        if not isinstance(fds, list):
            raise Unsupported("poll() without a pollfd list")
        poller = select.poll()
        real: dict[int, int] = {}
        for entry in fds:
            script_fd = int(entry["fd"])
            real_fd = self._sock(script_fd).fileno()
            real[real_fd] = script_fd
            poller.register(real_fd, int(entry.get("events", 0)))
        ready = dict(poller.poll(int(timeout)))  # type: ignore[call-overload]
        out = []
        for entry in fds:
            real_fd = self._sock(int(entry["fd"])).fileno()
            out.append({**entry, "revents": ready.get(real_fd, 0)})
        return len(ready), out


SyscallHandler = object
"""Any object with a method per system call, as :class:`KernelSyscalls` has."""


def invoke(handler: object, event: SyscallEvent, args: list[object]) -> Callable[[], object]:
    """A function that makes the call (to run on a worker thread)."""
    method = getattr(handler, event.name, None)
    if method is None:
        raise Unsupported(f"{event.name}() (the syscall handler has no such method)")
    kwargs: dict[str, object] = {}
    if event.name in ("socket", "accept"):
        if not isinstance(event.result, int) or event.result < 0:
            kwargs = {"expected_fd": -1}
        else:
            kwargs = {"expected_fd": event.result}
    return lambda: method(*args, **kwargs)
