"""Is this link fit for an engine?  A check of an interface the lab did not make.

An engine works on any Ethernet interface (a physical NIC towards a remote
IUT, a bridge, a TAP device that a user-space stack owns), but the namespace
it runs in must stay out of the way: its kernel must not own the emulated
address (it would answer ARP/NDP for it and reset the IUT's segments), must
not forward IP or proxy ARP (it would answer or pass on what is the
emulator's), and must not merge received segments (GRO/LRO) before the
packet socket sees them.  :func:`check_link` reads those settings and says
what it found; it never changes anything.

``tcpemu check-link IFNAME [--netns NS] [--address A ...]`` prints the same
findings (:func:`register_cli`, :func:`cli_main`).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import logging
import os
import socket
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from . import net
from ._errors import TcpemuError, UsageError
from ._netns import netns_path, run_in_netns
from .wire import IPAddress

__all__ = [
    "Finding",
    "LinkFacts",
    "LinkWarning",
    "check_link",
    "check_link_quietly",
    "cli_main",
    "evaluate",
    "gather",
    "register_cli",
    "warn_findings",
    "warn_link",
]

log = logging.getLogger("tcpemu.linkcheck")

Severity = Literal["error", "warning"]

ARPHRD_ETHER = 1
_ARPHRD_NONE = 65534
_ARPHRD_NAMES = {
    ARPHRD_ETHER: "Ethernet",
    _ARPHRD_NONE: "none (a TUN device, layer 3)",
    772: "loopback",
    776: "IPv6-in-IPv4 tunnel",
    778: "GRE tunnel",
    768: "IPIP tunnel",
}
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFNAMSIZ = 16

# ETHTOOL_GFLAGS and its LRO bit (include/uapi/linux/ethtool.h): the legacy
# feature getters in tcpemu.net have no LRO.
_ETHTOOL_GFLAGS = 0x25
_ETH_FLAG_LRO = 1 << 15

# Link kinds whose receive path takes every unicast frame, whatever its
# destination MAC: the alien MAC of the emulator reaches the packet socket.
_ARPHRD_LOOPBACK = 772
_OPEN_KINDS = frozenset({"veth", "tun", "dummy", "vxlan", "geneve", "netkit"})
# Kinds that receive only frames to their own MAC unless promiscuous.
_MAC_FILTERED_KINDS = frozenset({"macvlan", "macvtap", "ipvlan", "ipvtap", "bond", "team", "vlan"})


@dataclass(frozen=True, slots=True)
class Finding:
    """One setting of the link or its namespace that gets in an engine's way.

    ``setting`` names what to change (a sysctl key, an ethtool feature, a link
    property, an address), ``value`` is what it is now, ``why`` what goes wrong
    with it and what to do, ``severity`` "error" (the engine will see wrong or
    no frames, or the kernel will answer for it) or "warning" (it depends on
    the set-up; ``why`` says on what).
    """

    setting: str
    value: str
    why: str
    severity: Severity

    def __str__(self) -> str:
        return f"{self.severity}: {self.setting} = {self.value}: {self.why}"


class LinkWarning(UserWarning):
    """Issued by :func:`warn_link` for each finding, its text naming the setting."""


@dataclass(frozen=True, slots=True)
class LinkFacts:
    """What :func:`gather` read about one interface and its namespace.

    Missing facts are None (a sysctl that does not exist, an offload the driver
    does not report): a check that needs one is skipped, never guessed.
    """

    ifname: str
    netns: str | None
    arphrd: int
    flags: int
    promiscuity: int
    kind: str | None
    master_kind: str | None = None
    master: str | None = None
    addresses: Mapping[IPAddress, str] = field(default_factory=dict)
    """Every address configured in the namespace, and the interface that has it."""
    sysctls: Mapping[str, str | None] = field(default_factory=dict)
    offloads: Mapping[str, bool] = field(default_factory=dict)


def _sysctl_keys(ifname: str) -> list[str]:
    return [
        "net.ipv4.ip_forward",
        f"net.ipv4.conf.{ifname}.forwarding",
        "net.ipv6.conf.all.forwarding",
        f"net.ipv6.conf.{ifname}.forwarding",
        "net.ipv4.conf.all.proxy_arp",
        f"net.ipv4.conf.{ifname}.proxy_arp",
        "net.ipv6.conf.all.proxy_ndp",
        f"net.ipv6.conf.{ifname}.proxy_ndp",
        f"net.ipv6.conf.{ifname}.disable_ipv6",
    ]


def _read_sysctl(key: str) -> str | None:
    # /proc/sys/net is the namespace of the thread that opens the file
    try:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def _read_offloads(ifname: str) -> dict[str, bool]:
    found: dict[str, bool] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for feature, cmd in net._ETHTOOL_GET.items():
            # a driver without the getter answers EOPNOTSUPP: unknown, not off
            with contextlib.suppress(OSError):
                found[feature] = bool(net._ethtool(sock, ifname, cmd))
        with contextlib.suppress(OSError):
            found["lro"] = bool(net._ethtool(sock, ifname, _ETHTOOL_GFLAGS) & _ETH_FLAG_LRO)
    return found


def _kind(link: object) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")  # type: ignore[attr-defined]
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


def _gather_here(ifname: str, netns: str | None) -> LinkFacts:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            where = f"namespace {netns!r}" if netns else "this namespace"
            raise UsageError(f"ifname {ifname!r}: no such interface in {where}")
        link = ipr.get_links(found[0])[0]
        names = {int(x["index"]): str(x.get_attr("IFLA_IFNAME")) for x in ipr.get_links()}
        master_index = link.get_attr("IFLA_MASTER")
        master_kind = None
        if master_index:
            master_kind = _kind(ipr.get_links(master_index)[0])
        addresses: dict[IPAddress, str] = {}
        for a in ipr.get_addr():
            text = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
            if text:
                addresses[ipaddress.ip_address(text.split("%")[0])] = names.get(int(a["index"]), "?")
    return LinkFacts(
        ifname=ifname,
        netns=netns,
        arphrd=int(link["ifi_type"]),
        flags=int(link["flags"]),
        promiscuity=int(link.get_attr("IFLA_PROMISCUITY") or 0),
        kind=_kind(link),
        master_kind=master_kind,
        master=names.get(int(master_index)) if master_index else None,
        addresses=addresses,
        sysctls={key: _read_sysctl(key) for key in _sysctl_keys(ifname)},
        offloads=_read_offloads(ifname),
    )


def _check_ifname(ifname: object) -> str:
    if (
        not isinstance(ifname, str)
        or not 0 < len(ifname.encode()) < IFNAMSIZ
        or "/" in ifname
        or any(c.isspace() for c in ifname)
    ):
        raise UsageError(
            f"ifname must be an interface name of 1 to {IFNAMSIZ - 1} bytes without '/' or spaces, "
            f"got {ifname!r}"
        )
    return ifname


def _check_netns(netns: object) -> str | None:
    if netns is None:
        return None
    if not isinstance(netns, str) or not netns or "/" in netns:
        raise UsageError(f"netns must be None or a namespace name (no '/'), got {netns!r}")
    if not os.path.exists(netns_path(netns)):
        raise UsageError(f"netns {netns!r}: no such network namespace ({netns_path(netns)} missing)")
    return netns


def _parse_addresses(emulated: Iterable[str | IPAddress]) -> list[IPAddress]:
    if isinstance(emulated, str | bytes):
        raise UsageError(f"emulated must be a list of addresses, got the single value {emulated!r}")
    parsed = []
    for value in emulated:
        try:
            parsed.append(value if not isinstance(value, str) else ipaddress.ip_address(value))
        except ValueError:
            raise UsageError(f"emulated: {value!r} is not an IPv4 or IPv6 address") from None
        if not isinstance(parsed[-1], ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise UsageError(f"emulated: {value!r} is not an IPv4 or IPv6 address")
    return parsed


def gather(ifname: str, netns: str | None = None) -> LinkFacts:
    """Read what :func:`evaluate` needs about ``ifname`` in namespace ``netns`` (None: here).

    UsageError when the namespace or the interface does not exist.  Blocking:
    from trio, call it through ``trio.to_thread.run_sync``.
    """
    name = _check_ifname(ifname)
    ns = _check_netns(netns)
    return run_in_netns(ns, _gather_here, name, ns)


def evaluate(facts: LinkFacts, emulated: Iterable[str | IPAddress] = ()) -> list[Finding]:
    """The findings for gathered facts; no I/O (the rules, apart from the reading)."""
    found: list[Finding] = []
    ifname = facts.ifname

    def add(setting: str, value: object, why: str, severity: Severity) -> None:
        found.append(Finding(setting, str(value), why, severity))

    # -- the link itself
    if facts.arphrd == _ARPHRD_LOOPBACK:
        # links without an Ethernet header (TUN, IP tunnels) are fine: the engine reads
        # them as IP packets; a loopback device is no link towards another stack
        add(
            "link type",
            f"{facts.arphrd} (loopback)",
            "a loopback device is no link towards another stack: the engine would read its own "
            "frames and the host's alike",
            "error",
        )
    if not facts.flags & IFF_UP:
        add("link state", "down", f"nothing is sent or received: `ip link set {ifname} up`", "error")
    elif not facts.flags & IFF_LOWER_UP:
        add(
            "link carrier",
            "off",
            "nothing is sent or received without a carrier; a TAP device has one only while a process "
            "holds its file descriptor (is the user-space stack running?), a NIC only with a cable",
            "error",
        )
    if facts.kind == "bridge" and not facts.promiscuity:
        add(
            "promiscuity",
            "0 (a bridge device)",
            "a bridge passes frames for a MAC it does not own (the emulator's local_mac) up to its own "
            f"device only in promiscuous mode: `ip link set {ifname} promisc on`, or open the engine on "
            "the far end of a veth whose other end is a bridge port",
            "error",
        )
    elif facts.arphrd == ARPHRD_ETHER and not facts.promiscuity and facts.kind not in _OPEN_KINDS:
        what = "a NIC" if facts.kind is None else f"a {facts.kind} device"
        add(
            "promiscuity",
            f"0 ({what})",
            f"{what} takes unicast frames only for its own MAC: frames to the emulator's alien local_mac "
            f"reach the engine only with `ip link set {ifname} promisc on`; or use the interface's own "
            "MAC as local_mac, in a namespace with no address and no forwarding, so that its kernel "
            "drops what it receives",
            "warning",
        )
    if facts.master_kind == "bridge":
        add(
            "bridge port",
            f"of {facts.master or '?'}",
            "frames the engine sends on a bridge port leave through that port only, and frames the "
            "bridge sends out of it count as outgoing, which the engine never reads: right when the IUT "
            "is on the port's far side (a NIC's wire), wrong when it is behind the bridge (then open the "
            "engine on the far end of the veth, or on the bridge device in promiscuous mode)",
            "warning",
        )

    # -- the namespace's kernel must stay silent for the emulated addresses
    sysctls = facts.sysctls
    for family, keys in (
        ("IPv4", ("net.ipv4.ip_forward", f"net.ipv4.conf.{ifname}.forwarding")),
        ("IPv6", ("net.ipv6.conf.all.forwarding", f"net.ipv6.conf.{ifname}.forwarding")),
    ):
        on = [k for k in keys if sysctls.get(k) not in (None, "0")]
        if on:
            add(
                on[0],
                sysctls[on[0]],
                f"this namespace forwards {family}: a segment of the IUT that reaches its kernel (sent to "
                "the interface's own MAC, or broadcast) is routed on or answered with ICMP instead of "
                f"dropped; set {on[0]}=0 in the tester's namespace",
                "error",
            )
    for key in ("net.ipv4.conf.all.proxy_arp", f"net.ipv4.conf.{ifname}.proxy_arp"):
        if sysctls.get(key) not in (None, "0"):
            add(
                key,
                sysctls[key],
                "the kernel answers ARP, with its own MAC, for addresses it has a route to: the IUT may "
                "learn that MAC for the emulated address and the kernel then resets its segments; "
                f"set {key}=0",
                "error",
            )
            break
    for key in ("net.ipv6.conf.all.proxy_ndp", f"net.ipv6.conf.{ifname}.proxy_ndp"):
        if sysctls.get(key) not in (None, "0"):
            add(
                key,
                sysctls[key],
                "the kernel answers neighbour solicitations for its proxy entries (`ip -6 neigh add proxy`) "
                f"with its own MAC: no such entry may name an emulated address (or set {key}=0)",
                "warning",
            )
            break
    for addr in _parse_addresses(emulated):
        owner = facts.addresses.get(addr)
        if owner is not None:
            add(
                f"address {addr}",
                f"configured on {owner}",
                "the kernel here owns the emulated address: it answers ARP/NDP for it with its own MAC and "
                "answers segments sent to that MAC with RST. That is safe only when the IUT's neighbour "
                "entry pins the address to the emulator's local_mac (as tcpemu.lab does); otherwise remove "
                f"the address (`ip addr del {addr} dev {owner}`)",
                "warning",
            )

    # -- offloads: what the packet socket sees should be what the wire carries
    off = facts.offloads
    if off.get("lro"):
        add(
            "ethtool lro",
            "on",
            "the NIC merges received segments into larger ones before the engine sees them: "
            f"retransmissions and segment boundaries are lost (`ethtool -K {ifname} lro off`)",
            "error",
        )
    if off.get("gro"):
        add(
            "ethtool gro",
            "on",
            "received segments of one flow may be merged before the packet socket sees them (on a NIC, and "
            "on a veth, where GRO switches on NAPI; a TAP merges only when its owner opened it with "
            f"IFF_NAPI): `ethtool -K {ifname} gro off`",
            "warning",
        )
    if off.get("rx"):
        add(
            "ethtool rx",
            "on",
            "a NIC that checks received checksums may drop frames with a bad one before the engine sees "
            f"them, and a veth marks frames as checked: `ethtool -K {ifname} rx off` to see every frame",
            "warning",
        )
    sent = [f for f in ("tx", "tso", "gso") if off.get(f)]
    if sent:
        add(
            "ethtool " + "/".join(sent),
            "on",
            "frames this namespace's own kernel sends on the link leave with partial checksums or larger "
            "than the MSS, and a capture of the link shows them so (the engine's own frames are complete): "
            f"`ethtool -K {ifname} {' '.join(f + ' off' for f in sent)}`",
            "warning",
        )
    return found


def check_link(
    ifname: str, netns: str | None = None, emulated: Iterable[str | IPAddress] = ()
) -> list[Finding]:
    """The findings for ``ifname`` in namespace ``netns`` (None: this one).

    ``emulated``: the addresses the engine will use as its own (the ``local``
    addresses of its connections); each one the namespace owns is a finding.
    An empty list means nothing was found.  UsageError (naming the argument)
    when an argument is malformed or names no namespace or interface; a setting
    that cannot be read on an odd interface is skipped, not an error.
    Blocking (a thread, a netlink dump, a few file reads and ioctls):
    from trio, call it through ``trio.to_thread.run_sync``.
    """
    addrs = _parse_addresses(emulated)  # before any I/O: bad input fails fast
    return evaluate(gather(ifname, netns), addrs)


def check_link_quietly(
    ifname: str, netns: str | None = None, emulated: Iterable[str | IPAddress] = ()
) -> list[Finding]:
    """:func:`check_link` that never raises: a failure of the check is logged (debug) and
    gives no findings.  For ``open_engine``: a link that cannot be checked is no reason
    to stop an engine that may work.  Blocking, like :func:`check_link`."""
    try:
        return check_link(ifname, netns, emulated)
    except Exception as exc:  # a check must never stop the engine
        log.debug("link check of %s in %s failed: %s", ifname, netns or "this namespace", exc)
        return []


def warn_findings(
    findings: Iterable[Finding], ifname: str, netns: str | None = None, *, stacklevel: int = 1
) -> None:
    """Issue a :class:`LinkWarning` for each finding, naming the link and the setting.

    ``stacklevel=1`` points the warning at the code that calls this function, 2 at
    its caller, and so on.  Call it from the task (not from a worker thread), so
    that the warning can point at the user's code.
    """
    where = f" in {netns}" if netns else ""
    for finding in findings:
        warnings.warn(LinkWarning(f"{ifname}{where}: {finding}"), stacklevel=stacklevel + 1)


def warn_link(
    ifname: str,
    netns: str | None = None,
    emulated: Iterable[str | IPAddress] = (),
    *,
    stacklevel: int = 1,
) -> list[Finding]:
    """:func:`check_link_quietly`, each finding issued as a :class:`LinkWarning` (``stacklevel``
    as in :func:`warn_findings`); never raises.  Blocking: from trio, run :func:`check_link_quietly`
    in a thread and call :func:`warn_findings` in the task."""
    findings = check_link_quietly(ifname, netns, emulated)
    warn_findings(findings, ifname, netns, stacklevel=stacklevel + 1)
    return findings


# ------------------------------------------------------------------ the CLI


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    """Add ``check-link`` to the ``tcpemu`` command's subparsers; returns its parser."""
    p = subparsers.add_parser(
        "check-link",
        help="say what in a link or its namespace gets in an engine's way (changes nothing)",
        description="Check an interface (and its namespace) for an engine: forwarding, proxy ARP, "
        "offloads, promiscuity, carrier, and the emulated addresses owned by the namespace. "
        "Exit status 0: nothing found, 1: findings, 2: usage error.",
    )
    p.add_argument("ifname", help="the interface the engine will run on")
    p.add_argument("--netns", default=None, help="the network namespace of the interface (default: this one)")
    p.add_argument(
        "--address",
        action="append",
        default=[],
        metavar="A",
        help="an address the engine will emulate (repeat for more)",
    )
    return p


def cli_main(args: argparse.Namespace, out: object = None) -> int:
    """Run ``check-link``: print the findings; 0 none, 1 some, 2 usage error."""
    import sys

    stream = out if out is not None else sys.stdout

    def say(text: str) -> None:
        print(text, file=stream)  # type: ignore[call-overload]

    where = f" in namespace {args.netns}" if args.netns else ""
    try:
        findings = check_link(args.ifname, args.netns, args.address)
    except UsageError as exc:
        say(f"check-link: {exc}")
        return 2
    except (TcpemuError, PermissionError) as exc:
        say(f"check-link: {exc} (entering a namespace needs CAP_SYS_ADMIN: run as root)")
        return 2
    for finding in findings:
        say(f"{finding.severity:7} {finding.setting} = {finding.value}")
        say(f"        {finding.why}")
    if not findings:
        say(f"{args.ifname}{where}: nothing found")
        return 0
    errors = sum(f.severity == "error" for f in findings)
    warnings_ = len(findings) - errors
    say(
        f"{args.ifname}{where}: {errors} error{'s' * (errors != 1)}, "
        f"{warnings_} warning{'s' * (warnings_ != 1)}"
    )
    return 1
