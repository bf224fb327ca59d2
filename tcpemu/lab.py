"""Throwaway test labs: fresh network namespaces joined by veth.

The two-host lab::

    [ iut namespace ]  iut0 198.18.0.1/24 ==veth== tst0 198.18.0.2/24  [ tst namespace ]

The kernel of the "iut" namespace is the implementation under test.  The
emulator runs on tst0 with the tester's address and an *alien* MAC that no
interface owns; a permanent neighbour entry on the IUT points the tester's
address at that MAC, so the tester's own kernel never sees (or resets) the
IUT's segments.

Every lab has unique namespace names that carry the creating process id,
is removed on exit (also when the body raises), and :func:`cleanup_stale_labs`
removes labs whose process is gone (a run killed with SIGKILL).  Nothing in
the host's own namespace is touched.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import random
import re
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio

from . import net
from ._errors import LabError
from ._netns import run_in_netns
from .wire import IPAddress

__all__ = [
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

    async def socket(
        self, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
    ) -> trio.socket.SocketType:
        """A trio socket created inside this host's namespace."""
        raw = await trio.to_thread.run_sync(run_in_netns, self.netns, socket.socket, family, type, proto)
        return trio.socket.from_stdlib_socket(raw)

    async def sysctl(self, key: str, value: str | None = None) -> str:
        """Read (and first write, if ``value`` is given) a net.* sysctl in this namespace."""
        if value is not None:
            await trio.to_thread.run_sync(net.sysctl_write, self.netns, [(key, value)])
        return await trio.to_thread.run_sync(net.sysctl_read, self.netns, key)


@dataclass(slots=True)
class Lab:
    """A built lab; use :func:`open_lab` to get one."""

    name: str
    iut: Host
    tst: Host
    alien_mac: str
    _neighbours: list[tuple[Host, IPAddress]] = field(default_factory=list)
    _closed: bool = False

    @property
    def namespaces(self) -> list[str]:
        return [self.iut.netns, self.tst.netns]

    async def set_neighbour(self, host: Host, ip: IPAddress | str, mac: str) -> None:
        """A permanent neighbour entry ip -> mac on ``host``'s lab interface."""
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        await trio.to_thread.run_sync(net.neighbour_replace, host.netns, host.ifname, addr, mac)
        self._neighbours.append((host, addr))

    async def delete_neighbour(self, host: Host, ip: IPAddress | str) -> None:
        addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
        await trio.to_thread.run_sync(net.neighbour_delete, host.netns, host.ifname, addr)
        self._neighbours = [(h, a) for h, a in self._neighbours if (h, a) != (host, addr)]

    async def neighbours(self, host: Host) -> list[tuple[str, str | None, int]]:
        return await trio.to_thread.run_sync(net.neighbours, host.netns, host.ifname)

    async def add_alien_neighbour(self) -> None:
        """Point the IUT's entry for the tester's address at the alien MAC."""
        await self.set_neighbour(self.iut, self.tst.ip, self.alien_mac)

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
                net.neighbour_delete(host.netns, host.ifname, addr)
            except Exception as exc:  # the namespace removal below takes it anyway
                errors.append(f"neighbour {addr} on {host.role}: {exc}")
        self._neighbours.clear()
        for ns in self.namespaces:
            try:
                if ns in net.list_netns():
                    net.remove_netns(ns)
            except Exception as exc:
                errors.append(f"namespace {ns}: {exc}")
        if errors:
            raise LabError("lab teardown incomplete: " + "; ".join(errors))


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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale_labs() -> list[str]:
    """Remove lab namespaces whose creating process is gone; returns their names."""
    removed = []
    for name in net.list_netns():
        m = _NAME_RE.match(name)
        if m and not _pid_alive(int(m.group(1))):
            try:
                net.remove_netns(name)
                removed.append(name)
            except Exception as exc:
                log.warning("could not remove stale lab namespace %s: %s", name, exc)
    if removed:
        log.info("removed %d stale lab namespaces: %s", len(removed), ", ".join(removed))
    return removed


def _build(lab: Lab, sysctls: Mapping[str, str], offloads: bool) -> None:
    iut, tst = lab.iut, lab.tst
    created: list[str] = []
    try:
        for ns in lab.namespaces:
            net.create_netns(ns)
            created.append(ns)
        net.create_veth(iut.netns, iut.ifname, tst.netns, tst.ifname)
        for host in (iut, tst):
            net.add_address(host.netns, host.ifname, host.ip, host.prefixlen)
            net.link_up(host.netns, "lo")
            if not offloads:
                state = net.set_offloads(host.netns, host.ifname, on=False)
                if any(state.values()):
                    raise LabError(f"offloads still on for {host.ifname}: {state}")
            net.link_up(host.netns, host.ifname)
        net.sysctl_write(iut.netns, sysctls.items())
    except BaseException:
        for ns in created:
            try:
                net.remove_netns(ns)
            except Exception as exc:
                log.warning("cleanup after failed build: %s: %s", ns, exc)
        raise


def _hosts(tag: str, rng: random.Random) -> tuple[Host, Host, str]:
    base = f"{LAB_PREFIX}{os.getpid()}-{tag}"
    macs = [net.alien_mac(rng.randbytes(5)) for _ in range(3)]
    iut = Host("iut", f"{base}-iut", "iut0", ipaddress.ip_address("198.18.0.1"), 24, macs[0])
    tst = Host("tst", f"{base}-tst", "tst0", ipaddress.ip_address("198.18.0.2"), 24, macs[1])
    return iut, tst, macs[2]


@asynccontextmanager
async def open_lab(
    *,
    iut_sysctls: Mapping[str, str] | None = None,
    offloads: bool = False,
    alien_neighbour: bool = True,
    rng: random.Random | None = None,
) -> AsyncIterator[Lab]:
    """Build the two-host lab, yield it, and remove it on exit.

    ``iut_sysctls`` override :data:`DEFAULT_IUT_SYSCTLS`; ``offloads=True``
    leaves checksum/TSO/GSO/GRO offloads on; ``alien_neighbour`` adds the
    IUT's neighbour entry for the tester's address pointing at the alien MAC.
    """
    rng = rng or random.Random()
    await trio.to_thread.run_sync(cleanup_stale_labs)
    tag = f"{next(_counter)}{rng.getrandbits(24):06x}"
    iut, tst, alien = _hosts(tag, rng)
    sysctls = {**DEFAULT_IUT_SYSCTLS, **(iut_sysctls or {})}
    lab = Lab(name=tag, iut=iut, tst=tst, alien_mac=alien)
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(_build, lab, sysctls, offloads)
    # The kernel picks the veth MACs; read them back.
    macs = await trio.to_thread.run_sync(
        lambda: (net.link_mac(iut.netns, iut.ifname), net.link_mac(tst.netns, tst.ifname))
    )
    lab.iut = Host(iut.role, iut.netns, iut.ifname, iut.ip, iut.prefixlen, macs[0])
    lab.tst = Host(tst.role, tst.netns, tst.ifname, tst.ip, tst.prefixlen, macs[1])
    try:
        if alien_neighbour:
            await lab.add_alien_neighbour()
        yield lab
    finally:
        await lab.aclose()
