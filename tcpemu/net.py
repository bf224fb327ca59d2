"""Network plumbing through pyroute2: namespaces, veth links, addresses,
neighbour entries, link MACs, offloads and sysctls.

Every function here is synchronous and blocking.  pyroute2's IPRoute runs
an event loop of its own, so from trio call these inside
``trio.to_thread.run_sync`` (one call per batch of set-up work).
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import ipaddress
import os
import re
import socket
import struct
from collections.abc import Iterable

from pyroute2 import NetlinkError, NetNS, netns

from ._errors import LabError, PrivilegeError, UsageError
from ._netns import NETNS_RUN_DIR, netns_path, run_in_netns
from .wire import IPAddress

__all__ = [
    "create_netns",
    "remove_netns",
    "list_netns",
    "create_veth",
    "add_address",
    "link_up",
    "add_route",
    "addresses",
    "link_mac",
    "link_exists",
    "neighbour_replace",
    "neighbour_delete",
    "neighbour_entry",
    "neighbours",
    "set_offloads",
    "sysctl_write",
    "sysctl_read",
    "alien_mac",
]

# neighbour (NUD) states, include/uapi/linux/neighbour.h
NUD_INCOMPLETE = 0x01
NUD_REACHABLE = 0x02
NUD_STALE = 0x04
NUD_DELAY = 0x08
NUD_PROBE = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80


# pyroute2 takes a name with a '/' as a path (relative to the working
# directory), and bind-mounts that path's directory: only plain names here.
_NETNS_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}")


def _check_netns_name(name: str) -> None:
    if not isinstance(name, str) or not _NETNS_NAME_RE.fullmatch(name):
        raise UsageError(
            f"a namespace name is 1 to 255 of A-Z a-z 0-9 _ . - (not starting with . or -), got {name!r}"
        )


def create_netns(name: str) -> None:
    """A new named network namespace; LabError (naming it) when that fails."""
    _check_netns_name(name)
    try:
        netns.create(name)
    except OSError as exc:
        path = netns_path(name)
        # pyroute2 makes the mount point before it binds the namespace to it,
        # so a failure in between leaves an empty file that would list as a
        # namespace.  An existing name (EEXIST) is somebody else's: left alone.
        if not isinstance(exc, FileExistsError) and os.path.isfile(path) and not os.path.ismount(path):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if isinstance(exc, PermissionError):
            if exc.errno == errno.EACCES and not os.access(NETNS_RUN_DIR, os.W_OK):
                # the capability is there; the directory of named namespaces is root's
                raise PrivilegeError(
                    f"creating network namespace {name!r} needs write access to {NETNS_RUN_DIR} "
                    "(root, or CAP_DAC_OVERRIDE; or run rootless, tcpemu.rootless): "
                    f"{exc}"
                ) from exc
            raise PrivilegeError(
                f"creating network namespace {name!r} needs CAP_SYS_ADMIN (run as root): {exc}"
            ) from exc
        raise LabError(f"could not create network namespace {name!r}: {exc}") from exc


def remove_netns(name: str) -> None:
    """Remove a named namespace; FileNotFoundError if it is not there (any more)."""
    _check_netns_name(name)
    netns.remove(name)


def list_netns() -> list[str]:
    if not os.path.isdir(NETNS_RUN_DIR):
        return []
    return sorted(netns.listnetns())


def _index(ns: NetNS, ifname: str) -> int:
    found = ns.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"no link {ifname!r} in its namespace")
    return int(found[0])


def create_veth(ns_a: str, if_a: str, ns_b: str, if_b: str) -> None:
    """A veth pair with end ``if_a`` in ``ns_a`` and ``if_b`` in ``ns_b``."""
    with NetNS(ns_a) as ns:
        ns.link("add", ifname=if_a, kind="veth", peer={"ifname": if_b, "net_ns_fd": ns_b})


def add_address(ns_name: str, ifname: str, ip: IPAddress, prefixlen: int) -> None:
    with NetNS(ns_name) as ns:
        # IPv6: no duplicate address detection (IFA_F_NODAD), so the address
        # is usable at once instead of tentative for a second or more
        kw = {"flags": 0x02} if ip.version == 6 else {}
        ns.addr("add", index=_index(ns, ifname), address=str(ip), prefixlen=prefixlen, **kw)


def add_route(ns_name: str, dst: ipaddress.IPv4Network | ipaddress.IPv6Network, gateway: IPAddress) -> None:
    with NetNS(ns_name) as ns:
        ns.route("add", dst=str(dst), gateway=str(gateway))


def addresses(ns_name: str) -> list[IPAddress]:
    """Every IP address configured in a namespace (all interfaces)."""
    with NetNS(ns_name) as ns:
        return [ipaddress.ip_address(a.get("IFA_ADDRESS")) for a in ns.get_addr()]


def link_up(ns_name: str, ifname: str) -> None:
    with NetNS(ns_name) as ns:
        ns.link("set", index=_index(ns, ifname), state="up")


def link_exists(ns_name: str, ifname: str) -> bool:
    with NetNS(ns_name) as ns:
        return bool(ns.link_lookup(ifname=ifname))


def link_mac(ns_name: str, ifname: str) -> str:
    with NetNS(ns_name) as ns:
        link = ns.get_links(_index(ns, ifname))[0]
        return str(link.get("IFLA_ADDRESS"))


def neighbour_replace(ns_name: str, ifname: str, ip: IPAddress, mac: str, state: int = NUD_PERMANENT) -> None:
    """A neighbour entry ip -> mac on ifname (added or replaced), permanent unless ``state`` says
    otherwise (NUD_STALE: the kernel confirms the MAC the next time it uses the entry)."""
    with NetNS(ns_name) as ns:
        ns.neigh("replace", dst=str(ip), lladdr=mac, ifindex=_index(ns, ifname), state=state)


def neighbour_delete(ns_name: str, ifname: str, ip: IPAddress, *, missing_ok: bool = False) -> None:
    """Delete the neighbour entry of ip on ifname; ``missing_ok``: no error when there is none."""
    with NetNS(ns_name) as ns:
        try:
            ns.neigh("del", dst=str(ip), ifindex=_index(ns, ifname))
        except NetlinkError as exc:
            if not (missing_ok and exc.code == errno.ENOENT):
                raise


def neighbour_entry(ns_name: str, ifname: str, ip: IPAddress) -> tuple[str | None, int] | None:
    """(MAC or None, NUD state) of ip's neighbour entry on ifname, or None when there is none."""
    for dst, mac, state in neighbours(ns_name, ifname):
        if ipaddress.ip_address(dst) == ip:
            return (mac.lower() if mac else None), state
    return None


def neighbours(ns_name: str, ifname: str | None = None) -> list[tuple[str, str | None, int]]:
    """(address, MAC or None, NUD state) of each neighbour entry."""
    with NetNS(ns_name) as ns:
        kw = {"ifindex": _index(ns, ifname)} if ifname else {}
        return [(str(n.get("NDA_DST")), n.get("NDA_LLADDR"), int(n["state"])) for n in ns.neigh("dump", **kw)]


# ethtool legacy ioctls (include/uapi/linux/ethtool.h)
SIOCETHTOOL = 0x8946
_ETHTOOL_SET = {
    "rx": 0x15,  # ETHTOOL_SRXCSUM
    "tx": 0x17,  # ETHTOOL_STXCSUM
    "sg": 0x19,  # ETHTOOL_SSG
    "tso": 0x1F,  # ETHTOOL_STSO
    "gso": 0x24,  # ETHTOOL_SGSO
    "gro": 0x2C,  # ETHTOOL_SGRO
}
_ETHTOOL_GET = {"rx": 0x14, "tx": 0x16, "sg": 0x18, "tso": 0x1E, "gso": 0x23, "gro": 0x2B}


def _ethtool(sock: socket.socket, ifname: str, cmd: int, value: int = 0) -> int:
    data = array.array("I", [cmd, value])
    addr, _ = data.buffer_info()
    ifreq = struct.pack("16sP", ifname.encode(), addr) + b"\x00" * 16
    fcntl.ioctl(sock.fileno(), SIOCETHTOOL, ifreq)
    return data[1]


def set_offloads(ns_name: str, ifname: str, *, on: bool = False) -> dict[str, bool]:
    """Switch checksum, SG, TSO, GSO and GRO offloads; returns what the link then reports."""

    def work() -> dict[str, bool]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            # gro/gso/tso first: they depend on sg and tx checksumming.
            for feature in (
                ("gro", "gso", "tso", "sg", "tx", "rx") if not on else ("rx", "tx", "sg", "tso", "gso", "gro")
            ):
                try:
                    _ethtool(sock, ifname, _ETHTOOL_SET[feature], int(on))
                except OSError as exc:
                    raise LabError(f"ethtool {feature} {'on' if on else 'off'} on {ifname}: {exc}") from exc
            return {f: bool(_ethtool(sock, ifname, c)) for f, c in _ETHTOOL_GET.items()}

    return run_in_netns(ns_name, work)


def _sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def sysctl_write(ns_name: str, items: Iterable[tuple[str, str]]) -> None:
    """Write net.* sysctls inside namespace ns_name (/proc/sys/net follows the thread's namespace)."""

    def work() -> None:
        for key, value in items:
            if not key.startswith("net."):
                raise LabError(f"only per-namespace net.* sysctls can be set here, got {key!r}")
            try:
                with open(_sysctl_path(key), "w") as f:
                    f.write(str(value))
            except OSError as exc:
                raise LabError(f"sysctl {key}={value!r} in {ns_name}: {exc}") from exc

    run_in_netns(ns_name, work)


def sysctl_read(ns_name: str, key: str) -> str:
    def work() -> str:
        with open(_sysctl_path(key)) as f:
            return f.read().strip()

    return run_in_netns(ns_name, work)


def alien_mac(rng_bytes: bytes) -> str:
    """A locally administered unicast MAC from 5 random bytes (02:xx:...)."""
    if len(rng_bytes) != 5:
        raise LabError("alien_mac needs 5 random bytes")
    return ":".join(f"{b:02x}" for b in b"\x02" + rng_bytes)


def parse_ip(value: str | IPAddress) -> IPAddress:
    return value if not isinstance(value, str) else ipaddress.ip_address(value)
