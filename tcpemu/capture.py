"""pcapng capture of everything an engine sends and receives.

Wireshark and tcpdump open the files: one section, one interface
description block naming the interface (nanosecond timestamps), and one
enhanced packet block per frame with its direction in ``epb_flags``.

Long runs rotate: a new file when the current one passes ``max_bytes`` or
``max_seconds``, and only the newest ``max_files`` are kept, so disk use
stays under ``max_bytes * max_files``.
"""

from __future__ import annotations

import ipaddress
import os
import pathlib
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ._accel import SPEEDUPS
from ._errors import MalformedFrameError, UsageError
from .wire import IPAddress, classify_untrusted, flow_key

__all__ = ["PcapngWriter", "PcapngRecord", "read_pcapng", "filter_pcapng", "INBOUND", "OUTBOUND"]

INBOUND = 1
OUTBOUND = 2
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101  # IPv4 or IPv6 packets without a link header (TUN, IP tunnels)

_SHB = 0x0A0D0D0A
_IDB = 0x00000001
_EPB = 0x00000006
_BYTE_ORDER = 0x1A2B3C4D
_EPB_HEAD = struct.Struct("<IIIIIII")
_EPB_FLAGS = (struct.pack("<HHI", 2, 4, INBOUND), struct.pack("<HHI", 2, 4, OUTBOUND))
_END = struct.pack("<HH", 0, 0)
_PAD = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")
# what follows an EPB's data, by direction and data length mod 4: padding,
# the epb_flags option and opt_endofopt (the block's total length comes last)
_EPB_TAILS = tuple(tuple(_PAD[i] + flags + _END for i in range(4)) for flags in _EPB_FLAGS)
_EPB_BATCH = None if SPEEDUPS is None else SPEEDUPS.epb_batch


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\x00" * (-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


def _header(ifname: str, snaplen: int, linktype: int = LINKTYPE_ETHERNET) -> bytes:
    shb = _block(_SHB, struct.pack("<IHHq", _BYTE_ORDER, 1, 0, -1) + _option(4, b"tcpemu") + _END)
    idb_opts = _option(2, ifname.encode()) + _option(9, bytes([9])) + _END  # if_name, if_tsresol=ns
    idb = _block(_IDB, struct.pack("<HHI", linktype, 0, snaplen) + idb_opts)
    return shb + idb


class PcapngWriter:
    """Append frames to ``path`` (rotating to ``path``-N.pcapng files when bounded)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ifname: str = "tcpemu",
        snaplen: int = 65535,
        max_bytes: int | None = None,
        max_seconds: float | None = None,
        max_files: int | None = None,
        linktype: int = LINKTYPE_ETHERNET,
    ) -> None:
        if max_bytes is not None and max_bytes < 4096:
            raise UsageError(f"max_bytes must be at least 4096, got {max_bytes}")
        if max_files is not None and max_files < 1:
            raise UsageError(f"max_files must be at least 1, got {max_files}")
        if max_files is not None and max_bytes is None and max_seconds is None:
            raise UsageError("max_files bounds rotated files: give max_bytes or max_seconds too")
        if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
            raise UsageError(
                f"linktype must be LINKTYPE_ETHERNET (1) or LINKTYPE_RAW (101), got {linktype!r}"
            )
        self.linktype = linktype
        self.path = pathlib.Path(path)
        self.ifname = ifname
        self.snaplen = snaplen
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds
        self.max_files = max_files
        self.frames = 0
        self.files: list[pathlib.Path] = []
        self._n = 0
        self._file = None
        self._size = 0
        self._opened = 0.0
        self._open_next()

    def _open_next(self) -> None:
        if self._file is not None:
            self._file.close()
        name = (
            self.path
            if self._n == 0
            else self.path.with_name(f"{self.path.stem}-{self._n}{self.path.suffix}")
        )
        self._n += 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(name, "wb", buffering=1 << 20)  # noqa: SIM115 (closed in close())
        header = _header(self.ifname, self.snaplen, self.linktype)
        self._file.write(header)
        self._size = len(header)
        self._opened = time.monotonic()
        self.files.append(name)
        if self.max_files is not None:
            while len(self.files) > self.max_files:
                old = self.files.pop(0)
                old.unlink(missing_ok=True)

    def write(self, frame: bytes, direction: int, ts_ns: int | None = None) -> None:
        """One frame; ``direction`` is INBOUND or OUTBOUND; ``ts_ns`` defaults to now."""
        self._write([frame], direction, time.time_ns() if ts_ns is None else ts_ns)

    def write_batch(self, frames: list[bytes], direction: int) -> None:
        """Frames read together, in order, with one timestamp: the moment they were read."""
        ts = time.time_ns()
        if self.max_bytes is None:
            self._write(frames, direction, ts)
        else:
            for frame in frames:  # rotation by size looks at every frame, as write() does
                self._write([frame], direction, ts)

    def _write(self, frames: list[bytes], direction: int, ts: int) -> None:
        if self._file is None:
            raise UsageError(f"capture {self.path} is closed")
        head, ts_hi, ts_lo = _EPB_HEAD.pack, ts >> 32, ts & 0xFFFFFFFF
        tails = _EPB_TAILS[direction - 1]
        snaplen = self.snaplen
        if _EPB_BATCH is not None:
            # the compiled part builds the same blocks (tests compare the two)
            blocks, size = _EPB_BATCH(frames, ts_hi, ts_lo, tails, snaplen)
            self._file.write(blocks)
            self._count(size, len(frames))
            return
        parts: list[bytes] = []
        size = 0
        # frames of one batch share a timestamp, and most share a length with
        # others (ACKs, full segments): each length's block head and tail once
        wraps: dict[int, tuple[bytes, bytes, int, int]] = {}
        for frame in frames:
            length = len(frame)
            wrap = wraps.get(length)
            if wrap is None:
                caplen = min(length, snaplen)
                total = 28 + caplen + (-caplen % 4) + 12 + 4
                wrap = wraps[length] = (
                    head(_EPB, total, 0, ts_hi, ts_lo, caplen, length),
                    tails[caplen % 4] + total.to_bytes(4, "little"),
                    total,
                    caplen,
                )
            block_head, block_tail, total, caplen = wrap
            parts += (block_head, frame if caplen == length else frame[:caplen], block_tail)
            size += total
        # one write per batch; the file object buffers, so this is one copy
        self._file.write(b"".join(parts))
        self._count(size, len(frames))

    def _count(self, size: int, frames: int) -> None:
        self._size += size
        self.frames += frames
        if (self.max_bytes is not None and self._size >= self.max_bytes) or (
            self.max_seconds is not None and time.monotonic() - self._opened >= self.max_seconds
        ):
            self._open_next()

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True, slots=True)
class PcapngRecord:
    time_ns: int
    direction: int
    frame: bytes


def read_pcapng(path: str | os.PathLike[str]) -> Iterator[PcapngRecord]:
    """The enhanced packet blocks of a (little-endian, nanosecond) file written by this module."""
    data = pathlib.Path(path).read_bytes()
    off = 0
    while off + 12 <= len(data):
        kind, length = struct.unpack_from("<II", data, off)
        if length < 12 or off + length > len(data):
            raise UsageError(f"{path}: block at {off} has length {length}")
        if kind == _EPB:
            _, _, _, hi, lo, caplen, _orig = _EPB_HEAD.unpack_from(data, off)
            frame = data[off + 28 : off + 28 + caplen]
            direction = 0
            opt = off + 28 + caplen + (-caplen % 4)
            while opt + 4 <= off + length - 4:
                code, olen = struct.unpack_from("<HH", data, opt)
                if code == 0:
                    break
                if code == 2 and olen == 4:
                    direction = struct.unpack_from("<I", data, opt + 4)[0] & 3
                opt += 4 + olen + (-olen % 4)
            yield PcapngRecord((hi << 32) | lo, direction, frame)
        off += length


def filter_pcapng(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    local: tuple[str | IPAddress, int],
    remote: tuple[str | IPAddress, int],
    ifname: str = "tcpemu",
) -> int:
    """Copy the frames of one connection (both directions) from ``src`` to ``dst``; returns how many."""
    lip, rip = ipaddress.ip_address(local[0]), ipaddress.ip_address(remote[0])
    keys = {flow_key(lip, local[1], rip, remote[1]), flow_key(rip, remote[1], lip, local[1])}
    out = PcapngWriter(dst, ifname=ifname)
    try:
        for rec in read_pcapng(src):
            try:
                fkey, _, _, _ = classify_untrusted(rec.frame)
            except MalformedFrameError:
                continue
            if fkey in keys:
                out.write(rec.frame, rec.direction or INBOUND, rec.time_ns)
        return out.frames
    finally:
        out.close()
