"""Throwaway test labs: fresh network namespaces joined by veth.

The two-host lab::

    [ iut ]  iut0 198.18.0.1/24 ==veth== tst0 198.18.0.2/24  [ tst ]
             2001:db8::1/64                2001:db8::2/64

The gateway lab (``open_lab(gateway=True)``)::

    [ iut ]  iut0 198.18.0.1 == gw0 198.18.0.2 [ gw ] gw1 198.18.1.1 == tst0 198.18.1.2  [ tst ]

The kernel of the "iut" namespace is the implementation under test.  The
emulator runs on tst0 with the tester's address and an *alien* MAC that no
interface owns; a permanent neighbour entry on the IUT points the tester's
address at that MAC, so the tester's own kernel never sees (or resets) the
IUT's segments.  :meth:`Lab.break_path` cuts a direction by pointing the
next hop's entries at a *black-hole* MAC (nobody's, the emulator's neither)
and, where the emulator sends straight to the IUT, by cutting the engine's
frames; :meth:`Lab.repair_path` puts back what was there.

Every lab has unique namespace names that carry the creating process id,
is removed on exit (also when the body raises), and :func:`cleanup_stale_labs`
removes labs whose process is gone (a run killed with SIGKILL).  A lab also
holds a shared flock on each of its namespace files for its whole life, so a
live lab is never taken for stale by a process that cannot see its pid (one
in another PID namespace sharing ``/var/run/netns``).  Nothing in the host's
own namespace is touched.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import ipaddress
import itertools
import logging
import os
import random
import re
import socket
import warnings
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from . import net
from ._engine import Engine, engines_on
from ._errors import LabError, UsageError
from ._io import PacketLink
from ._netns import netns_path, run_in_netns
from .wire import IPAddress, parse_mac

__all__ = [
    "Direction",
    "Host",
    "Lab",
    "open_lab",
    "cleanup_stale_labs",
    "connect_nowait",
    "DEFAULT_IUT_SYSCTLS",
    "LAB_PREFIX",
]

log = logging.getLogger("tcpemu.lab")

LAB_PREFIX = "tcpemu-"
_NAME_RE = re.compile(r"^tcpemu-(\d+)-([0-9a-z]+)-(iut|tst|gw)$")
_counter = itertools.count(1)

# Pinned so that results do not depend on the host's settings (a new
# namespace copies some TCP sysctls from it).  Tests may override any key.
DEFAULT_IUT_SYSCTLS: Mapping[str, str] = {
    "net.ipv4.tcp_rmem": "4096 131072 6291456",
    "net.ipv4.tcp_wmem": "4096 16384 4194304",
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_sack": "1",
    "net.ipv4.tcp_window_scaling": "1",
    "net.ipv4.tcp_syn_retries": "6",
    "net.ipv4.tcp_synack_retries": "5",
    "net.ipv4.tcp_ecn": "2",
}


@dataclass(frozen=True, slots=True)
class Host:
    """One end of the lab: its namespace, interface, address and MAC."""

    role: str
    netns: str
    ifname: str
    ip: IPAddress
    prefixlen: int
    mac: str
    ip6: ipaddress.IPv6Address | None = None
    """The host's IPv6 address (2001:db8::/32, prefix /64)."""

    def address(self, version: int = 4) -> IPAddress:
        """The host's IPv4 (``version=4``) or IPv6 (``version=6``) address."""
        if version == 6:
            if self.ip6 is None:
                raise LabError(f"{self.role} has no IPv6 address")
            return self.ip6
        return self.ip

    async def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> trio.socket.SocketType:
        """A trio socket created inside this host's namespace."""
        raw = await trio.to_thread.run_sync(run_in_netns, self.netns, socket.socket, family, type, proto)
        return trio.socket.from_stdlib_socket(raw)

    async def send_frames(self, frames: list[bytes]) -> None:
        """Put raw frames on this host's interface from its namespace, 64 to a
        ``sendmmsg()``: a storm or a pre-filled ring for the other side."""

        def work() -> None:
            link = PacketLink(self.ifname, self.netns)
            try:
                for i in range(0, len(frames), 64):
                    link.send_batch(frames[i : i + 64])
            finally:
                link.close()

        await trio.to_thread.run_sync(work)

    async def sysctl(self, key: str, value: str | None = None) -> str:
        """Read (and first write, if ``value`` is given) a net.* sysctl in this namespace."""
        if value is not None:
            await trio.to_thread.run_sync(net.sysctl_write, self.netns, [(key, value)])
        return await trio.to_thread.run_sync(net.sysctl_read, self.netns, key)


class Direction(enum.Enum):
    """A direction of traffic between the IUT and the tester."""

    IUT_TO_TST = "iut->tst"
    TST_TO_IUT = "tst->iut"


@dataclass(frozen=True, slots=True)
class _SavedEntry:
    """A neighbour entry as it was before a break: what the repair puts back."""

    host: Host
    addr: IPAddress
    mac: str | None  # None: there was no entry (or one without a MAC): the repair deletes ours
    state: int


def _direction(value: Direction | str) -> Direction:
    try:
        return Direction(value)
    except ValueError:
        allowed = ", ".join(repr(d.value) for d in Direction)
        raise UsageError(f"direction must be a Direction or one of {allowed}, got {value!r}") from None


@dataclass(slots=True)
class Lab:
    """A built lab; use :func:`open_lab` to get one.

    In the gateway topology ``gw_iut`` and ``gw_tst`` are the gateway's two
    interfaces (same namespace), on the IUT's and on the tester's link.
    ``alien_mac`` is the MAC the emulator answers for; ``blackhole_mac``
    another locally administered MAC that no interface and no emulator
    uses: :meth:`break_path` points neighbour entries at it.
    """

    name: str
    iut: Host
    tst: Host
    alien_mac: str
    gw_iut: Host | None = None
    gw_tst: Host | None = None
    blackhole_mac: str = ""
    _neighbours: list[tuple[Host, IPAddress]] = field(default_factory=list)
    _set_macs: dict[tuple[Host, IPAddress], str] = field(default_factory=dict, repr=False)
    _broken: dict[Direction, list[_SavedEntry]] = field(default_factory=dict, repr=False)
    _cut_engines: dict[Direction, list[Engine]] = field(default_factory=dict, repr=False)
    _closed: bool = False
    _holds: list[int] = field(default_factory=list, repr=False)  # fds with LOCK_SH on our namespaces

    def __post_init__(self) -> None:
        if not self.blackhole_mac:
            self.blackhole_mac = _draw_mac(random.Random(), {self.alien_mac})
        if self.blackhole_mac == self.alien_mac:
            raise UsageError(f"blackhole_mac must differ from alien_mac, both are {self.alien_mac}")

    @property
    def namespaces(self) -> list[str]:
        names = [self.iut.netns, self.tst.netns]
        if self.gw_iut is not None:
            names.append(self.gw_iut.netns)
        return names

    @property
    def gateway(self) -> bool:
        return self.gw_iut is not None

    @property
    def tst_next_hop_mac(self) -> str:
        """The MAC that frames from the tester's link to the IUT go to (the IUT's, or the gateway's)."""
        return self.gw_tst.mac if self.gw_tst is not None else self.iut.mac

    @property
    def broken(self) -> frozenset[Direction]:
        """The directions broken now (by :meth:`break_path`, not repaired yet)."""
        return frozenset(self._broken)

    async def set_neighbour(self, host: Host, ip: IPAddress | str, mac: str) -> None:
        """A permanent neighbour entry ip -> mac on ``host``'s lab interface."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        await trio.to_thread.run_sync(net.neighbour_replace, host.netns, host.ifname, addr, mac)
        self._remember(host, addr, mac)

    def _remember(self, host: Host, addr: IPAddress, mac: str | None) -> None:
        if mac is None:
            self._set_macs.pop((host, addr), None)
            self._neighbours = [(h, a) for h, a in self._neighbours if (h, a) != (host, addr)]
            return
        self._set_macs[(host, addr)] = mac.lower()
        if (host, addr) not in self._neighbours:
            self._neighbours.append((host, addr))

    async def delete_neighbour(self, host: Host, ip: IPAddress | str) -> None:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        await trio.to_thread.run_sync(net.neighbour_delete, host.netns, host.ifname, addr)
        self._remember(host, addr, None)

    async def neighbours(self, host: Host) -> list[tuple[str, str | None, int]]:
        return await trio.to_thread.run_sync(net.neighbours, host.netns, host.ifname)

    def _path_entry(self, direction: Direction) -> tuple[Host, Host]:
        """(host whose neighbour entry carries the path, destination host) of a direction."""
        if direction is Direction.IUT_TO_TST:
            return (self.gw_tst if self.gw_tst is not None else self.iut), self.tst
        return (self.gw_iut if self.gw_iut is not None else self.tst), self.iut

    async def _point_tester_at(self, mac: str, what: str) -> None:
        if Direction.IUT_TO_TST in self._broken:
            raise UsageError(f"{what}: the path iut->tst is broken; repair_path(Direction.IUT_TO_TST) first")
        holder, dest = self._path_entry(Direction.IUT_TO_TST)
        for addr in (dest.ip, dest.ip6):
            if addr is not None:
                await self.set_neighbour(holder, addr, mac)

    async def add_alien_neighbour(self) -> None:
        """Point the tester's addresses at the alien MAC: on the gateway if there is one, else on the IUT.

        Frames from the IUT to the tester then reach the tester's link
        addressed to the alien MAC, for the emulator and not for the
        tester's kernel.  This is the lab's set-up for an emulated tester
        (``open_lab(alien_neighbour=True)``, the default), not a break.
        """
        await self._point_tester_at(self.alien_mac, "add_alien_neighbour")

    async def use_kernel_tester(self) -> None:
        """Point the tester's addresses at the tester interface's own MAC (permanent entries),
        so that the tester's kernel, not an emulator, gets the IUT's frames;
        :meth:`add_alien_neighbour` hands them back to the emulator."""
        await self._point_tester_at(self.tst.mac, "use_kernel_tester")

    async def break_path(self, direction: Direction | str) -> None:
        """Stop all traffic in one direction until :meth:`repair_path`.

        The next hop's neighbour entries for the destination's addresses (on
        the gateway, or on the sending host; IPv4 and IPv6) point at
        :attr:`blackhole_mac`, which neither a kernel nor an emulator takes
        frames for; what they pointed at before is remembered.  In the
        two-host lab an emulator on the tester's interface sends straight to
        the IUT's MAC, past any neighbour entry: every engine open on that
        interface (``tcpemu._engine.engines_on``) then drops its frames to
        the IUT (``Engine.cut_path``).  Every such engine's connections note
        the break in their traces.

        Breaking a direction that is broken already changes nothing.  An
        engine opened while a path is broken is not cut.
        """
        d = _direction(direction)
        if d in self._broken:
            return
        holder, dest = self._path_entry(d)
        addrs = [a for a in (dest.ip, dest.ip6) if a is not None]
        current = await trio.to_thread.run_sync(self._read_entries, holder, addrs)
        # Remembered before anything changes, so that a repair after a break
        # that failed half-way still puts every entry back.
        self._broken[d] = [_SavedEntry(holder, addr, *current[addr]) for addr in addrs]
        for addr in addrs:
            if (holder, addr) not in self._neighbours:
                self._neighbours.append((holder, addr))  # removed at teardown whatever happens
            await trio.to_thread.run_sync(
                net.neighbour_replace, holder.netns, holder.ifname, addr, self.blackhole_mac
            )
        cut = []
        for engine in self._tester_engines():
            if self._emulator_sends(d) and parse_mac(self.iut.mac) not in engine.cut_macs:
                engine.cut_path(self.iut.mac)
                cut.append(engine)
            engine.note(f"lab: path {d.value} broken (neighbour entries on {holder.role} -> black hole)")
        self._cut_engines[d] = cut

    async def repair_path(self, direction: Direction | str) -> None:
        """Undo :meth:`break_path`: each neighbour entry it changed is put back
        exactly as it was (a permanent entry with its MAC; a learnt one with
        its MAC, left for the kernel to confirm; none at all: deleted), and
        the engines on the tester's interface send to the IUT again.

        Repairing a direction that is not broken is deprecated: for backward
        compatibility it points the entry at the destination's own MAC (use
        :meth:`use_kernel_tester` for that).
        """
        d = _direction(direction)
        saved = self._broken.pop(d, None)
        if saved is None:
            warnings.warn(
                f"repair_path({d.value!r}) of a path that is not broken: pointing it at the "
                "destination's own MAC; use lab.use_kernel_tester() for that",
                DeprecationWarning,
                stacklevel=2,
            )
            holder, dest = self._path_entry(d)
            for addr in (dest.ip, dest.ip6):
                if addr is not None:
                    await self.set_neighbour(holder, addr, dest.mac)
            return
        await trio.to_thread.run_sync(self._restore_entries, saved)
        for engine in self._cut_engines.pop(d, []):
            engine.restore_path(self.iut.mac)  # only what the break cut: a test's own cut stays
        for engine in self._tester_engines():
            engine.note(f"lab: path {d.value} repaired (neighbour entries put back as they were)")

    def _emulator_sends(self, direction: Direction) -> bool:
        """Whether an emulator on the tester's link sends this direction past every neighbour entry."""
        return direction is Direction.TST_TO_IUT and self.gw_iut is None

    def _tester_engines(self) -> list[Engine]:
        return engines_on(self.tst.netns, self.tst.ifname)

    def _read_entries(self, holder: Host, addrs: list[IPAddress]) -> dict[IPAddress, tuple[str | None, int]]:
        """The MAC and state of each address's entry on holder: from the kernel's table, or
        else what this lab set there, or else (None, 0): no entry."""
        table = {
            ipaddress.ip_address(dst): ((mac.lower() if mac else None), state)
            for dst, mac, state in net.neighbours(holder.netns, holder.ifname)
        }
        found: dict[IPAddress, tuple[str | None, int]] = {}
        for addr in addrs:
            mac, state = table.get(addr, (None, 0))
            if mac is None and (holder, addr) in self._set_macs:
                mac, state = self._set_macs[(holder, addr)], net.NUD_PERMANENT
            found[addr] = (mac, state)
        return found

    def _restore_entries(self, saved: list[_SavedEntry]) -> None:
        for entry in saved:
            host = entry.host
            if entry.mac is None:
                net.neighbour_delete(host.netns, host.ifname, entry.addr, missing_ok=True)
                self._remember(host, entry.addr, None)
                continue
            # A permanent (or no-ARP) entry comes back as it was; a learnt one
            # with its MAC as STALE, so that the kernel confirms it on first use
            # as it would have, instead of trusting it for ever.
            keep = entry.state & (net.NUD_PERMANENT | net.NUD_NOARP)
            state = entry.state if keep else net.NUD_STALE
            net.neighbour_replace(host.netns, host.ifname, entry.addr, entry.mac, state)
            # a learnt entry is the kernel's again: not ours to delete at teardown
            self._remember(host, entry.addr, entry.mac if keep else None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self._teardown)

    def _teardown(self) -> None:
        errors = []
        for host, addr in self._neighbours:
            try:
                net.neighbour_delete(host.netns, host.ifname, addr, missing_ok=True)
            except Exception as exc:  # the namespace removal below takes it anyway
                errors.append(f"neighbour {addr} on {host.role}: {exc}")
        self._neighbours.clear()
        present = set(net.list_netns())
        for ns in self.namespaces:
            try:
                if ns in present:
                    net.remove_netns(ns)
            except Exception as exc:
                errors.append(f"namespace {ns}: {exc}")
        _release(self._holds)
        if errors:
            raise LabError("lab teardown incomplete: " + "; ".join(errors))


def _draw_mac(rng: random.Random, taken: set[str]) -> str:
    """A locally administered unicast MAC not in ``taken`` (5 random bytes after 02)."""
    for _ in range(64):  # a clash has odds of 2**-40 a draw: bounded all the same
        mac = net.alien_mac(rng.randbytes(5))
        if mac not in taken:
            return mac
    raise LabError(f"could not draw a MAC distinct from {sorted(taken)}")


def connect_nowait(sock: trio.socket.SocketType, address: tuple[str, int]) -> int:
    """Start a non-blocking connect() on a trio socket; returns its errno (EINPROGRESS expected).

    trio sockets only offer an awaiting connect(); a test that wants the
    connect in flight while it drives the emulator uses this, then checks
    SO_ERROR once the socket is writable.
    """
    raw = socket.socket(fileno=os.dup(sock.fileno()))
    try:
        raw.setblocking(False)
        return raw.connect_ex(address)
    finally:
        raw.close()


async def recv_exactly(sock: trio.socket.SocketType, n: int, timeout: float = 5) -> bytes:
    """Exactly ``n`` bytes from a kernel socket (fewer only at EOF), within ``timeout``
    (trio.TooSlowError past it): what a test reads from the IUT's side."""
    buf = bytearray()
    with trio.fail_after(timeout):
        while len(buf) < n:
            chunk = await sock.recv(n - len(buf))
            if not chunk:
                break
            buf += chunk
    return bytes(buf)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _flocked(name: str, operation: int) -> int:
    """An fd on namespace ``name``'s file with flock ``operation`` taken (never waits)."""
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _hold(name: str) -> int:
    """An fd with a shared flock on namespace ``name``'s file, held while the lab lives."""
    return _flocked(name, fcntl.LOCK_SH)


def _release(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()


def _claim_stale(name: str) -> int | None:
    """An fd with the exclusive flock on ``name``, or None if a live lab holds it (or it is gone)."""
    try:
        return _flocked(name, fcntl.LOCK_EX)
    except (FileNotFoundError, BlockingIOError):
        return None


def _orphaned() -> list[str]:
    """Lab namespaces whose creating process (the pid in the name) is gone."""
    return [
        name
        for name in net.list_netns()
        if (m := _NAME_RE.match(name)) is not None and not _pid_alive(int(m.group(1)))
    ]


def stale_labs() -> list[str]:
    """The lab namespaces :func:`cleanup_stale_labs` would remove now: their creator is
    gone and no live lab holds their lock.  Removes nothing."""
    stale = []
    for name in _orphaned():
        fd = _claim_stale(name)
        if fd is not None:  # None: a live lab in a PID namespace we cannot see holds it
            os.close(fd)
            stale.append(name)
    return stale


def cleanup_stale_labs() -> list[str]:
    """Remove lab namespaces whose creating process is gone; returns their names.

    A namespace counts as stale when the pid in its name is not alive and no
    process holds its lab's flock on it.
    """
    removed = []
    for name in _orphaned():
        fd = _claim_stale(name)
        if fd is None:
            # held by a live lab whose pid this process cannot see, or
            # removed meanwhile by another process's cleanup
            log.debug("lab namespace %s is held or gone: left alone", name)
            continue
        try:
            net.remove_netns(name)
            removed.append(name)
        except FileNotFoundError:
            # another process's cleanup (a parallel test worker) was first
            log.debug("stale lab namespace %s was removed by another process", name)
        except Exception as exc:
            log.warning("could not remove stale lab namespace %s: %s", name, exc)
        finally:
            os.close(fd)
    if removed:
        log.info("removed %d stale lab namespaces: %s", len(removed), ", ".join(removed))
    return removed


def _build(lab: Lab, sysctls: Mapping[str, str], offloads: bool) -> None:
    created: list[str] = []
    links: list[tuple[Host, Host]] = []
    if lab.gw_iut is not None and lab.gw_tst is not None:
        links = [(lab.iut, lab.gw_iut), (lab.gw_tst, lab.tst)]
    else:
        links = [(lab.iut, lab.tst)]
    hosts = [h for pair in links for h in pair]
    try:
        for ns in lab.namespaces:
            net.create_netns(ns)
            created.append(ns)
            lab._holds.append(_hold(ns))
            net.link_up(ns, "lo")
        for a, b in links:
            net.create_veth(a.netns, a.ifname, b.netns, b.ifname)
        for host in hosts:
            net.add_address(host.netns, host.ifname, host.ip, host.prefixlen)
            if host.ip6 is not None:
                net.add_address(host.netns, host.ifname, host.ip6, 64)
            if not offloads:
                state = net.set_offloads(host.netns, host.ifname, on=False)
                if any(state.values()):
                    raise LabError(f"offloads still on for {host.ifname}: {state}")
            net.link_up(host.netns, host.ifname)
        if lab.gw_iut is not None and lab.gw_tst is not None:
            net.sysctl_write(
                lab.gw_iut.netns, [("net.ipv4.ip_forward", "1"), ("net.ipv6.conf.all.forwarding", "1")]
            )
            net.add_route(lab.iut.netns, _subnet(lab.tst), lab.gw_iut.ip)
            net.add_route(lab.tst.netns, _subnet(lab.iut), lab.gw_tst.ip)
            if lab.tst.ip6 and lab.iut.ip6 and lab.gw_iut.ip6 and lab.gw_tst.ip6:
                net.add_route(lab.iut.netns, _subnet(lab.tst, 6), lab.gw_iut.ip6)
                net.add_route(lab.tst.netns, _subnet(lab.iut, 6), lab.gw_tst.ip6)
        net.sysctl_write(lab.iut.netns, sysctls.items())
    except BaseException:
        for ns in created:
            try:
                net.remove_netns(ns)
            except Exception as exc:
                log.warning("cleanup after failed build: %s: %s", ns, exc)
        _release(lab._holds)
        raise


def _subnet(host: Host, version: int = 4) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if version == 6:
        return ipaddress.ip_network(f"{host.ip6}/64", strict=False)
    return ipaddress.ip_network(f"{host.ip}/{host.prefixlen}", strict=False)


def _plan(tag: str, gateway: bool) -> tuple[Host, Host, Host | None, Host | None]:
    base = f"{LAB_PREFIX}{os.getpid()}-{tag}"
    ip = ipaddress.ip_address
    v6 = ipaddress.IPv6Address
    iut = Host("iut", f"{base}-iut", "iut0", ip("198.18.0.1"), 24, "", v6("2001:db8::1"))
    if not gateway:
        return (
            iut,
            Host("tst", f"{base}-tst", "tst0", ip("198.18.0.2"), 24, "", v6("2001:db8::2")),
            None,
            None,
        )
    gw_ns = f"{base}-gw"
    return (
        iut,
        Host("tst", f"{base}-tst", "tst0", ip("198.18.1.2"), 24, "", v6("2001:db8:0:1::2")),
        Host("gw-iut", gw_ns, "gw0", ip("198.18.0.2"), 24, "", v6("2001:db8::2")),
        Host("gw-tst", gw_ns, "gw1", ip("198.18.1.1"), 24, "", v6("2001:db8:0:1::1")),
    )


def _with_mac(host: Host | None) -> Host | None:
    if host is None:
        return None
    return Host(
        host.role,
        host.netns,
        host.ifname,
        host.ip,
        host.prefixlen,
        net.link_mac(host.netns, host.ifname),
        host.ip6,
    )


@asynccontextmanager
async def open_lab(
    *,
    gateway: bool = False,
    iut_sysctls: Mapping[str, str] | None = None,
    offloads: bool = False,
    alien_neighbour: bool = True,
    rng: random.Random | None = None,
) -> AsyncIterator[Lab]:
    """Build a lab, yield it, and remove it on exit (also when the body raises).

    Two hosts (default): IUT 198.18.0.1/24 -- tester 198.18.0.2/24 on one
    veth.  ``gateway=True``: IUT 198.18.0.1/24 -- 198.18.0.2/24 gateway
    198.18.1.1/24 -- tester 198.18.1.2/24, the gateway forwarding and both
    ends routing through it.

    ``iut_sysctls`` override :data:`DEFAULT_IUT_SYSCTLS`; ``offloads=True``
    leaves checksum/TSO/GSO/GRO offloads on; ``alien_neighbour`` makes the
    tester's address resolve to the alien MAC (on the gateway, or on the
    IUT), which is what an emulated tester needs.
    """
    rng = rng or random.Random()
    await trio.to_thread.run_sync(cleanup_stale_labs)
    tag = f"{next(_counter)}{rng.getrandbits(24):06x}"
    iut, tst, gw_iut, gw_tst = _plan(tag, gateway)
    alien = _draw_mac(rng, set())
    blackhole = _draw_mac(rng, {alien})
    sysctls = {**DEFAULT_IUT_SYSCTLS, **(iut_sysctls or {})}
    lab = Lab(
        name=tag,
        iut=iut,
        tst=tst,
        alien_mac=alien,
        gw_iut=gw_iut,
        gw_tst=gw_tst,
        blackhole_mac=blackhole,
    )
    try:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_build, lab, sysctls, offloads)
        # The kernel picks the veth MACs; read them back.
        hosts = await trio.to_thread.run_sync(lambda: [_with_mac(h) for h in (iut, tst, gw_iut, gw_tst)])
        lab.iut, lab.tst, lab.gw_iut, lab.gw_tst = hosts  # type: ignore[assignment]
        if alien_neighbour:
            await lab.add_alien_neighbour()
        yield lab
    finally:
        await lab.aclose()
