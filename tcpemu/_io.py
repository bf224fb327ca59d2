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
import time
from typing import Any, Final, Protocol

from . import _bpf
from ._accel import SPEEDUPS
from ._errors import EngineBrokenError, PrivilegeError, TcpemuError, UsageError
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
SIOCGIFHWADDR = 0x8927
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD


def _interface_mtu(sock: socket.socket, ifname: str) -> int:
    ifreq = struct.pack("16si12x", ifname.encode(), 0)
    return int(struct.unpack_from("i", fcntl.ioctl(sock.fileno(), SIOCGIFMTU, ifreq), 16)[0])


def _hardware_type(sock: socket.socket, ifname: str) -> int:
    """The interface's ARPHRD_* type (1: Ethernet; 65534: none, as TUN and WireGuard)."""
    ifreq = struct.pack("16s16x", ifname.encode())
    return int(struct.unpack_from("H", fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, ifreq), 16)[0])


def _is_l3(hwtype: int) -> bool:
    """No Ethernet header on this link: a packet starts with its IP header."""
    return hwtype not in (ARPHRD_ETHER, ARPHRD_LOOPBACK)


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
    dropped = 0
    for frame in frames[sent:]:
        try:
            _send(sock, frame, where)
        except FrameDropped:
            dropped += 1  # the others still go
    if dropped:
        raise FrameDropped(where, dropped)


SEND_STALL = 1.0  # seconds a full send buffer may hold up one frame


class FrameDropped(TcpemuError):
    """The device would not take frames (ENOBUFS: its queue, or its peer's backlog, stayed
    full for :data:`SEND_STALL`): they are lost, as on a congested wire.  ``count`` of them."""

    def __init__(self, where: str, count: int = 1) -> None:
        self.count = count
        super().__init__(f"{where}: {count} frame(s) dropped, the device's queue stayed full")


def _send_enobufs(sock: socket.socket, frame: bytes, where: str, address: tuple[str, int] | None) -> None:
    """ENOBUFS: the frame was dropped on the way to the device; try again a little later,
    for at most SEND_STALL (a veth whose peer is busy drains within microseconds)."""
    deadline = time.monotonic() + SEND_STALL
    pause = 0.0002
    while True:
        select.select([], [], [], pause)
        try:
            sock.send(frame) if address is None else sock.sendto(frame, address)
            return
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise EngineBrokenError(f"send on {where} failed: {exc}") from exc
        if time.monotonic() >= deadline:
            raise FrameDropped(where)
        pause = min(pause * 2, 0.01)


def _send(sock: socket.socket, frame: bytes, where: str, address: tuple[str, int] | None = None) -> None:
    """Send one frame; a full send buffer is waited out (bounded), never dropped silently
    (a device queue that stays full raises :class:`FrameDropped`, which the engine counts).
    ``address``: (ifname, protocol) for a link whose frames do not say their protocol."""
    try:
        sock.send(frame) if address is None else sock.sendto(frame, address)
        return
    except BlockingIOError:
        pass
    except OSError as exc:
        if exc.errno == errno.EMSGSIZE:
            raise UsageError(f"a frame of {len(frame)} bytes does not fit the MTU of {where}") from None
        if exc.errno == errno.ENOBUFS:
            _send_enobufs(sock, frame, where, address)
            return
        raise EngineBrokenError(f"send on {where} failed: {exc}") from exc
    # The kernel frees sent buffers within microseconds; wait for room in
    # the calling thread rather than lose the frame.
    _, writable, _ = select.select([], [sock], [], SEND_STALL)
    if not writable:
        raise EngineBrokenError(f"send on {where}: send buffer full for {SEND_STALL} s")
    try:
        sock.send(frame) if address is None else sock.sendto(frame, address)
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
        self.l3 = _is_l3(_hardware_type(self._sock, ifname))
        """True on a link without an Ethernet header (TUN, IP tunnels): frames are IP packets."""

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
        if self.l3:
            # no link header to say what the packet is: its IP version says it
            proto = ETH_P_IPV6 if frame[:1] and frame[0] >> 4 == 6 else ETH_P_IP
            _send(self._sock, frame, self.ifname, (self.ifname, proto))
            return
        _send(self._sock, frame, self.ifname)

    def send_batch(self, frames: list[bytes]) -> None:
        if self.l3:
            for frame in frames:
                self.send(frame)
            return
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
TP_STATUS_VLAN_VALID = 0x10
_VLAN_TCI = struct.Struct("=H")  # tpacket2_hdr.tp_vlan_tci, after status, len, snaplen, mac, net, sec, nsec
_STATUS_LOW_BYTE = 0 if sys.byteorder == "little" else 3
_TPACKET2_LENS = struct.Struct("=IIIH")  # the header's first fields: status, len, snaplen, mac
_STATUS = struct.Struct("=I")
_RING_BATCH: Final = None if SPEEDUPS is None else SPEEDUPS.ring_batch
_RING_TAKE: Final = None if SPEEDUPS is None else SPEEDUPS.ring_take


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
        if _RING_BATCH is not None:
            frames, self._head, truncated = _RING_BATCH(
                self._view, self._head, self._frame_size, self._frame_nr, limit
            )
            self.truncated += truncated
            return frames
        return self._recv_batch_python(limit)

    def recv_batch_taking(
        self, limit: int, conns: dict[bytes, Any], now: float, t0: float, touched: set[Any]
    ) -> tuple[list[bytes], int]:
        """:meth:`recv_batch` through the compiled part, which takes the plainest predicted
        frames for the connections in ``conns`` where they lie in the ring (see
        tcpemu/_speedups.c); returns the other frames, in order, and how many it took.
        Only when the compiled part was built."""
        assert _RING_TAKE is not None
        try:
            frames, self._head, truncated, taken = _RING_TAKE(
                self._view, self._head, self._frame_size, self._frame_nr, limit, conns, now, t0, touched
            )
        except Exception as exc:
            self._head = getattr(exc, "tcpemu_head", self._head)  # the slots it took are handed back
            raise
        self.truncated += truncated
        return frames, taken

    def _recv_batch_python(self, limit: int) -> list[bytes]:
        """What the compiled ring_batch does (tcpemu/_speedups.c), frame for frame."""
        frames: list[bytes] = []
        ring, view, size, nr = self._map, self._view, self._frame_size, self._frame_nr
        head = self._head
        unpack_hdr, set_status = _TPACKET2_LENS.unpack_from, _STATUS.pack_into
        while len(frames) < limit:
            off = head * size
            # TP_STATUS_USER is bit 0 of the status word: one byte says whether the slot is ours
            if not ring[off + _STATUS_LOW_BYTE] & TP_STATUS_USER:
                break
            status, length, snaplen, mac = unpack_hdr(view, off)
            frame = ring[off + mac : off + mac + snaplen]  # mmap slices are bytes: one copy
            if status & TP_STATUS_VLAN_VALID:
                # the kernel took the 802.1Q tag off into the header: put it back where it was
                tci = _VLAN_TCI.unpack_from(view, off + 24)[0]
                frame = frame[:12] + b"\x81\x00" + tci.to_bytes(2, "big") + frame[12:]
            frames.append(frame)
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


IFF_TUN = 0x0001
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
TUNSETIFF = 0x400454CA


class TunLink:
    """The file descriptor of a TUN (or TAP) device, owned by the engine itself.

    What the kernel of the device's namespace routes to the device is read
    here, and what is written here the kernel receives from the device: the
    IUT is that namespace's own stack, with no veth and no second namespace
    (packetdrill's local mode).  TUN carries IP packets (``l3``); TAP
    Ethernet frames.  The device is made if it does not exist (and goes
    when the descriptor closes, unless it was made persistent, as
    ``ip tuntap add`` does).  There is no kernel BPF filter here: everything
    routed to the device is for the emulator, and what no connection wants
    is counted as unmatched.
    """

    filters = False  # no kernel BPF in front of it (see set_filter)

    def __init__(self, ifname: str, netns: str | None = None, *, tap: bool = False) -> None:
        if not isinstance(ifname, str) or not 0 < len(ifname) < 16:
            raise UsageError(f"TUN/TAP name must be 1..15 characters, got {ifname!r}")
        self.ifname = ifname
        self.netns = netns
        self.l3 = not tap
        self._closed = False
        self._fd = run_in_netns(netns, self._open, ifname, tap)
        try:
            self.mtu = run_in_netns(netns, self._mtu, ifname)
        except BaseException:
            os.close(self._fd)
            raise

    @staticmethod
    def _open(ifname: str, tap: bool) -> int:
        try:
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except PermissionError as exc:
            raise PrivilegeError(
                f"opening /dev/net/tun needs CAP_NET_ADMIN (run as root): {exc.strerror}"
            ) from exc
        except FileNotFoundError:
            raise UsageError("no /dev/net/tun on this machine (the tun module is not loaded)") from None
        try:
            flags = (IFF_TAP if tap else IFF_TUN) | IFF_NO_PI
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH14x", ifname.encode(), flags))
        except OSError as exc:
            os.close(fd)
            if exc.errno == errno.EPERM:
                raise PrivilegeError(f"TUN/TAP {ifname!r} needs CAP_NET_ADMIN (run as root)") from exc
            if exc.errno == errno.EINVAL:
                raise UsageError(
                    f"{ifname!r} exists and is not a {'TAP' if tap else 'TUN'} device with these flags"
                ) from None
            raise UsageError(f"cannot attach to TUN/TAP {ifname!r}: {exc.strerror}") from None
        return fd

    @staticmethod
    def _mtu(ifname: str) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            return _interface_mtu(sock, ifname)

    def fileno(self) -> int:
        return self._fd

    def set_filter(self, program: list[_bpf.Insn]) -> None:
        pass  # see the class docstring: nothing but the emulator's traffic comes here

    def recv_batch(self, limit: int) -> list[bytes]:
        frames: list[bytes] = []
        read, fd = os.read, self._fd
        try:
            while len(frames) < limit:
                frames.append(read(fd, MAX_FRAME))
        except (BlockingIOError, InterruptedError):
            pass
        return frames

    def send(self, frame: bytes) -> None:
        try:
            os.write(self._fd, frame)
        except BlockingIOError:
            # the device's queue towards the kernel is full: wait for room (bounded), never drop
            _, writable, _ = select.select([], [self._fd], [], SEND_STALL)
            if not writable:
                raise EngineBrokenError(f"write to {self.ifname}: no room for {SEND_STALL} s") from None
            os.write(self._fd, frame)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.EMSGSIZE):
                raise UsageError(f"a packet of {len(frame)} bytes does not fit {self.ifname}") from None
            raise EngineBrokenError(f"write to {self.ifname} failed: {exc}") from exc

    def send_batch(self, frames: list[bytes]) -> None:
        for frame in frames:
            self.send(frame)

    def kernel_drops(self) -> int:
        return 0  # a TUN/TAP device has no receive buffer of ours to overflow

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            os.close(self._fd)


L3_MAC = bytes.fromhex("020000000003")
"""The MAC of both ends of a link without Ethernet header: a placeholder the
engine's frames carry inside, never on the wire."""
_L3_HEADER = {4: L3_MAC + L3_MAC + b"\x08\x00", 6: L3_MAC + L3_MAC + b"\x86\xdd"}


class L3Frames:
    """A link without an Ethernet header as the engine sees every link: each IP
    packet read gets a placeholder Ethernet header (both MACs :data:`L3_MAC`),
    which is taken off again before a frame is sent.  Packets that are not
    IPv4 or IPv6 keep no header and are counted malformed by the engine."""

    l3 = True

    def __init__(self, link: FrameLink) -> None:
        self.inner = link
        self.mtu = link.mtu
        self.filters = getattr(link, "filters", True)

    def fileno(self) -> int:
        return self.inner.fileno()

    def set_filter(self, program: list[_bpf.Insn]) -> None:
        self.inner.set_filter(program)

    def recv_batch(self, limit: int) -> list[bytes]:
        headers = _L3_HEADER
        out = []
        for packet in self.inner.recv_batch(limit):
            header = headers.get(packet[0] >> 4) if packet else None
            out.append(header + packet if header is not None else packet)
        return out

    def send(self, frame: bytes) -> None:
        self.inner.send(frame[14:])

    def send_batch(self, frames: list[bytes]) -> None:
        self.inner.send_batch([frame[14:] for frame in frames])

    def kernel_drops(self) -> int:
        return self.inner.kernel_drops()

    def close(self) -> None:
        self.inner.close()

    @property
    def truncated(self) -> int:
        return getattr(self.inner, "truncated", 0)


class MemoryLink:
    """One end of an in-memory link; :meth:`pair` makes both ends."""

    mtu = 65000  # what one datagram on the pair carries comfortably

    def __init__(self, sock: socket.socket, *, l3: bool = False) -> None:
        self._sock = sock
        self._sock.setblocking(False)
        self._closed = False
        self.l3 = l3
        """True: the pair carries bare IP packets, as a TUN device or an IP tunnel does."""

    @classmethod
    def pair(cls, *, l3: bool = False) -> tuple[MemoryLink, MemoryLink]:
        """Two connected ends; ``l3=True`` for a link without Ethernet header."""
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s in (a, b):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        return cls(a, l3=l3), cls(b, l3=l3)

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
