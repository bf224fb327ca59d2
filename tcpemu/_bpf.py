"""Classic BPF programs that pass only TCP frames for the emulator's addresses.

The kernel runs the filter before a frame is queued to the socket, so frames
that are not ours never reach Python.  Outgoing frames (PACKET_OUTGOING) are
refused too: the emulator does not want to read back what it or the host sent.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ._errors import UsageError
from .wire import IPAddress

SO_ATTACH_FILTER = 26
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE
PACKET_OUTGOING = 4
ACCEPT_BYTES = 0x40000

# opcodes (linux/filter.h)
LD_W_ABS = 0x20
LD_H_ABS = 0x28
LD_B_ABS = 0x30
JEQ_K = 0x15
AND_K = 0x54
JA = 0x05
RET_K = 0x06


@dataclass(frozen=True, slots=True)
class Insn:
    code: int
    jt: int
    jf: int
    k: int


class _Asm:
    """A tiny assembler: jumps name labels, offsets are resolved at the end."""

    def __init__(self) -> None:
        self.items: list[tuple[int, str | int, str | int, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int = 0, jt: str | int = 0, jf: str | int = 0) -> None:
        self.items.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.items)

    def assemble(self) -> list[Insn]:
        out = []
        for pc, (code, jt, jf, k) in enumerate(self.items):
            if code == JA and isinstance(k, str):
                k = self.labels[k] - pc - 1
            rel = []
            for target in (jt, jf):
                off = self.labels[target] - pc - 1 if isinstance(target, str) else target
                if not 0 <= off <= 255:
                    raise UsageError("too many local addresses for one BPF filter (jump out of range)")
                rel.append(off)
            out.append(Insn(code, rel[0], rel[1], k))
        return out


def _match_v4(asm: _Asm, addresses: list[IPAddress], protocol_at: int, address_at: int) -> None:
    """TCP (the protocol byte at ``protocol_at``) to one of ``addresses`` (at ``address_at``): accept."""
    asm.op(LD_B_ABS, protocol_at)
    asm.op(JEQ_K, 6, 0, "reject")
    asm.op(LD_W_ABS, address_at)
    for addr in addresses:
        asm.op(JEQ_K, int(addr), "accept", 0)
    asm.op(JA, "reject")  # type: ignore[arg-type]


def _match_v6_tcp(
    asm: _Asm, addresses: list[IPAddress], next_header_at: int, address_at: int, tag: str
) -> None:
    """TCP (the next header at ``next_header_at``) to one of ``addresses`` (at ``address_at``): accept."""
    asm.op(LD_B_ABS, next_header_at)
    asm.op(JEQ_K, 6, 0, "reject")
    _match_v6(asm, addresses, address_at, tag)
    asm.op(JA, "reject")  # type: ignore[arg-type]


def _accept_or_reject(asm: _Asm) -> list[Insn]:
    """The two ends every program jumps to, and the assembled program."""
    asm.label("accept")
    asm.op(RET_K, ACCEPT_BYTES)
    asm.label("reject")
    asm.op(RET_K, 0)
    return asm.assemble()


def _match_v6(asm: _Asm, addresses: list[IPAddress], offset: int, tag: str) -> None:
    """Jump to accept when the 16 bytes at ``offset`` are one of ``addresses``; fall through if not."""
    for i, addr in enumerate(addresses):
        words = struct.unpack("!4I", addr.packed)
        nxt = f"{tag}{i}"
        for j, word in enumerate(words):
            asm.op(LD_W_ABS, offset + 4 * j)
            asm.op(JEQ_K, word, "accept" if j == 3 else 0, nxt)
        asm.label(nxt)


def tcp_to_addresses(
    addresses: Iterable[IPAddress], neighbours: Iterable[IPAddress] = (), *, l3: bool = False
) -> list[Insn]:
    """Accept IPv4/IPv6 TCP frames whose destination is one of ``addresses``, and,
    for the addresses in ``neighbours``, ARP frames asking for (or answering to)
    them and IPv6 neighbour solicitations and advertisements about them.

    ``l3=True``: for a link without an Ethernet header (TUN, IP tunnels), where
    a packet starts with its IP header: the version nibble tells the family,
    and there are no neighbour frames.
    """
    if l3:
        return _tcp_to_addresses_l3(addresses)
    v4 = sorted({a for a in addresses if a.version == 4})
    v6 = sorted({a for a in addresses if a.version == 6})
    n4 = sorted({a for a in neighbours if a.version == 4})
    n6 = sorted({a for a in neighbours if a.version == 6})
    asm = _Asm()
    asm.op(LD_W_ABS, SKF_AD_PKTTYPE)
    asm.op(JEQ_K, PACKET_OUTGOING, "reject", 0)
    asm.op(LD_H_ABS, 12)
    asm.op(JEQ_K, 0x0800, "v4", 0)
    asm.op(JEQ_K, 0x86DD, "v6", 0)
    asm.op(JEQ_K, 0x0806, "arp", 0)
    asm.op(JEQ_K, 0x8100, 0, "untagged")
    asm.op(JA, "tagged")  # type: ignore[arg-type]  # far: JA's offset has 32 bits, a branch's 8
    asm.label("untagged")
    asm.op(JA, "reject")  # type: ignore[arg-type]
    asm.label("arp")
    asm.op(LD_W_ABS, 38)  # the target protocol address
    for addr in n4:
        asm.op(JEQ_K, int(addr), "accept", 0)
    asm.op(JA, "reject")  # type: ignore[arg-type]
    asm.label("v4")
    _match_v4(asm, v4, 23, 30)
    asm.label("v6")
    asm.op(LD_B_ABS, 20)
    asm.op(JEQ_K, 6, "v6tcp", 0)
    asm.op(JEQ_K, 58, "icmp6", "reject")
    asm.label("v6tcp")
    _match_v6(asm, v6, 38, "v6next")
    asm.op(JA, "reject")  # type: ignore[arg-type]
    asm.label("icmp6")
    asm.op(LD_B_ABS, 54)
    asm.op(JEQ_K, 135, "ns", 0)
    asm.op(JEQ_K, 136, "na", "reject")
    asm.label("ns")
    _match_v6(asm, n6, 62, "nsnext")  # the target address
    asm.op(JA, "reject")  # type: ignore[arg-type]
    asm.label("na")
    _match_v6(asm, n6, 38, "nanext")  # an advertisement sent to us
    asm.op(JA, "reject")  # type: ignore[arg-type]
    # an 802.1Q tag inline (a packet socket sees tags taken off by the kernel; an
    # in-memory link or a capture replayed carries them): TCP only, 4 bytes on
    asm.label("tagged")
    asm.op(LD_H_ABS, 16)
    asm.op(JEQ_K, 0x0800, 0, "tagged6")
    _match_v4(asm, v4, 27, 34)
    asm.label("tagged6")
    asm.op(JEQ_K, 0x86DD, 0, "reject")
    _match_v6_tcp(asm, v6, 24, 42, "t6next")
    return _accept_or_reject(asm)


def _tcp_to_addresses_l3(addresses: Iterable[IPAddress]) -> list[Insn]:
    v4 = sorted({a for a in addresses if a.version == 4})
    v6 = sorted({a for a in addresses if a.version == 6})
    asm = _Asm()
    asm.op(LD_W_ABS, SKF_AD_PKTTYPE)
    asm.op(JEQ_K, PACKET_OUTGOING, "reject", 0)
    asm.op(LD_B_ABS, 0)
    asm.op(AND_K, 0xF0)
    asm.op(JEQ_K, 0x40, "v4", 0)
    asm.op(JEQ_K, 0x60, "v6", "reject")
    asm.label("v4")
    _match_v4(asm, v4, 9, 16)
    asm.label("v6")
    _match_v6_tcp(asm, v6, 6, 24, "v6next")
    return _accept_or_reject(asm)


def reject_all() -> list[Insn]:
    return [Insn(RET_K, 0, 0, 0)]


def attach(sock: socket.socket, program: list[Insn]) -> None:
    """SO_ATTACH_FILTER: replaces whatever filter the socket had."""
    raw = b"".join(struct.pack("HBBI", i.code, i.jt, i.jf, i.k & 0xFFFFFFFF) for i in program)
    buf = ctypes.create_string_buffer(raw, len(raw))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
