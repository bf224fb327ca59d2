"""Frame I/O backends: synchronous, non-blocking, no async of their own.

:class:`PacketLink` is an AF_PACKET raw socket bound to one interface
(optionally created inside a named network namespace) with a classic-BPF
filter.  :class:`MemoryLink` is a pair of connected datagram sockets that
carry whole frames, for tests that need no network; it takes the same BPF
programs, so filters are tested without privileges.

The engine waits for readability on ``fileno()`` and then drains with
:meth:`recv_batch`.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import mmap
import os
import select
import socket
import struct
import sys
from typing import Protocol

from . import _bpf
from ._errors import EngineBrokenError, PrivilegeError, UsageError
from ._netns import run_in_netns

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_STATISTICS = 6
MAX_FRAME = 65536 + 64


class FrameLink(Protocol):
    mtu: int

    def send_batch(self, frames: list[bytes]) -> None: ...

    def fileno(self) -> int: ...
    def set_filter(self, program: list[_bpf.Insn]) -> None: ...
    def recv_batch(self, limit: int) -> list[bytes]: ...
    def send(self, frame: bytes) -> None: ...
    def kernel_drops(self) -> int: ...
    def close(self) -> None: ...


def _drain(sock: socket.socket, limit: int) -> list[bytes]:
    frames: list[bytes] = []
    recv = sock.recv
    try:
        while len(frames) < limit:
            frames.append(recv(MAX_FRAME))
    except (BlockingIOError, InterruptedError):
        pass
    return frames


SIOCGIFMTU = 0x8921


def _interface_mtu(sock: socket.socket, ifname: str) -> int:
    ifreq = struct.pack("16si12x", ifname.encode(), 0)
    return int(struct.unpack_from("i", fcntl.ioctl(sock.fileno(), SIOCGIFMTU, ifreq), 16)[0])


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.POINTER(_IoVec)),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_sendmmsg = getattr(_libc, "sendmmsg", None)


def _send_many(sock: socket.socket, frames: list[bytes], where: str) -> None:
    """All frames in one sendmmsg() where the C library has it; frames it
    did not take (a full buffer) go one by one through :func:`_send`."""
    n = len(frames)
    sent = 0
    if _sendmmsg is not None and n > 1:
        bufs = [ctypes.create_string_buffer(f, len(f)) for f in frames]
        iovs = (_IoVec * n)(*[_IoVec(ctypes.addressof(b), len(f)) for b, f in zip(bufs, frames, strict=True)])
        msgs = (_MMsgHdr * n)()
        for i in range(n):
            msgs[i].hdr.iov = ctypes.pointer(iovs[i])
            msgs[i].hdr.iovlen = 1
        sent = _sendmmsg(sock.fileno(), msgs, n, socket.MSG_DONTWAIT)
        if sent < 0:
            err = ctypes.get_errno()
            if err not in (errno.EAGAIN, errno.ENOBUFS, errno.EMSGSIZE):
                raise EngineBrokenError(f"sendmmsg on {where} failed: {os.strerror(err)}")
            sent = 0  # one by one below: a frame too long for the MTU gets its own error
    for frame in frames[sent:]:
        _send(sock, frame, where)


SEND_STALL = 1.0  # seconds a full send buffer may hold up one frame


def _send(sock: socket.socket, frame: bytes, where: str) -> None:
    """Send one frame; a full send buffer is waited out (bounded), never dropped."""
    try:
        sock.send(frame)
        return
    except BlockingIOError:
        pass
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            raise UsageError(f"a frame of {len(frame)} bytes does not fit the MTU of {where}") from None
        raise EngineBrokenError(f"send on {where} failed: {exc}") from exc
    # The kernel frees sent buffers within microseconds; wait for room in
    # the calling thread rather than lose the frame.
    _, writable, _ = select.select([], [sock], [], SEND_STALL)
    if not writable:
        raise EngineBrokenError(f"send on {where}: send buffer full for {SEND_STALL} s")
    try:
        sock.send(frame)
    except OSError as exc:
        raise EngineBrokenError(f"send on {where} failed: {exc}") from exc


class PacketLink:
    """AF_PACKET SOCK_RAW on ``ifname`` (inside namespace ``netns`` if given)."""

    def __init__(self, ifname: str, netns: str | None = None, *, rcvbuf: int = 8 << 20) -> None:
        self.ifname = ifname
        self.netns = netns
        self._closed = False
        self._drops = 0
        self._sock = run_in_netns(netns, self._open, ifname, rcvbuf)
        self.mtu = _interface_mtu(self._sock, ifname)

    def _open(self, ifname: str, rcvbuf: int) -> socket.socket:
        # Protocol 0 receives nothing until bind(); attach a reject-all filter
        # first so that no frame queued before the real filter slips in.
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError as exc:
            raise PrivilegeError(
                f"a raw socket on {ifname!r} needs CAP_NET_RAW (run as root): {exc.strerror}"
            ) from exc
        try:
            _bpf.attach(sock, _bpf.reject_all())
            self._configure(sock, rcvbuf)
            try:
                sock.bind((ifname, ETH_P_ALL))
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    raise UsageError(f"no interface {ifname!r} in this network namespace") from None
                raise
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _configure(self, sock: socket.socket, rcvbuf: int) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)

    def fileno(self) -> int:
        return self._sock.fileno()

    def set_filter(self, program: list[_bpf.Insn]) -> None:
        _bpf.attach(self._sock, program)

    def recv_batch(self, limit: int) -> list[bytes]:
        return _drain(self._sock, limit)

    def send(self, frame: bytes) -> None:
        _send(self._sock, frame, self.ifname)

    def send_batch(self, frames: list[bytes]) -> None:
        _send_many(self._sock, frames, self.ifname)

    def kernel_drops(self) -> int:
        """Frames the kernel dropped for a full socket buffer, since open."""
        # PACKET_STATISTICS resets on each read, so accumulate.
        raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        _packets, drops = struct.unpack("II", raw)
        self._drops += drops
        return self._drops

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()


PACKET_VERSION = 10
PACKET_RX_RING = 5
TPACKET_V2 = 1
TP_STATUS_KERNEL = 0
TP_STATUS_USER = 1
TP_STATUS_COPY = 2
_STATUS_LOW_BYTE = 0 if sys.byteorder == "little" else 3
_TPACKET2_LENS = struct.Struct("=IIIH")  # the header's first fields: status, len, snaplen, mac
_STATUS = struct.Struct("=I")


class PacketRing(PacketLink):
    """AF_PACKET with a PACKET_MMAP receive ring (TPACKET_V2): frames are read
    from shared memory in batches, no system call per frame.

    TPACKET_V2 rather than V3: V3 wakes the reader only when a whole block
    is retired (its timeout is at least 1 ms), which would delay every
    answer the emulator gives by up to that long; V2 wakes per frame.
    Frames longer than ``frame_size`` minus the ring header arrive
    truncated and are counted in :attr:`truncated`.
    """

    def __init__(
        self,
        ifname: str,
        netns: str | None = None,
        *,
        frame_size: int = 2048,
        frame_nr: int = 16384,
    ) -> None:
        if frame_size % 16 or frame_size < 256:
            raise UsageError(f"frame_size must be a multiple of 16 and >= 256, got {frame_size}")
        block_size = max(mmap.PAGESIZE, frame_size)
        while block_size % frame_size:
            block_size += mmap.PAGESIZE
        per_block = block_size // frame_size
        block_nr = -(-frame_nr // per_block)
        self._frame_size = frame_size
        self._frame_nr = block_nr * per_block
        self._ring_bytes = block_size * block_nr
        self._req = struct.pack("IIII", block_size, block_nr, frame_size, self._frame_nr)
        self._head = 0
        self.truncated = 0
        super().__init__(ifname, netns)
        try:
            self._map = mmap.mmap(
                self._sock.fileno(), self._ring_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError:
            self._sock.close()
            raise
        self._view = memoryview(self._map)

    def _configure(self, sock: socket.socket, rcvbuf: int) -> None:
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_RX_RING, self._req)

    def recv_batch(self, limit: int) -> list[bytes]:
        frames: list[bytes] = []
        ring, view, size, nr = self._map, self._view, self._frame_size, self._frame_nr
        head = self._head
        unpack_hdr, set_status = _TPACKET2_LENS.unpack_from, _STATUS.pack_into
        while len(frames) < limit:
            off = head * size
            # TP_STATUS_USER is bit 0 of the status word: one byte says whether the slot is ours
            if not ring[off + _STATUS_LOW_BYTE] & TP_STATUS_USER:
                break
            _status, length, snaplen, mac = unpack_hdr(view, off)
            frames.append(ring[off + mac : off + mac + snaplen])  # mmap slices are bytes: one copy
            if snaplen < length:
                self.truncated += 1
            set_status(view, off, TP_STATUS_KERNEL)  # hand the slot back
            head = head + 1 if head + 1 < nr else 0
        self._head = head
        return frames

    def close(self) -> None:
        if not self._closed:
            self._view.release()
            self._map.close()
        super().close()


class MemoryLink:
    """One end of an in-memory link; :meth:`pair` makes both ends."""

    mtu = 65000  # what one datagram on the pair carries comfortably

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._closed = False

    @classmethod
    def pair(cls) -> tuple[MemoryLink, MemoryLink]:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return cls(a), cls(b)

    def fileno(self) -> int:
        return self._sock.fileno()

    def set_filter(self, program: list[_bpf.Insn]) -> None:
        _bpf.attach(self._sock, program)

    def recv_batch(self, limit: int) -> list[bytes]:
        return _drain(self._sock, limit)

    def recv_nowait(self) -> bytes | None:
        """One frame or None (for the test side of the pair)."""
        try:
            return self._sock.recv(MAX_FRAME)
        except BlockingIOError:
            return None

    def send(self, frame: bytes) -> None:
        _send(self._sock, frame, "memory link")

    def send_batch(self, frames: list[bytes]) -> None:
        _send_many(self._sock, frames, "memory link")

    def kernel_drops(self) -> int:
        return 0

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._sock.close()
