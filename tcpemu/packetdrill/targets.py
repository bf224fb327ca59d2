"""Where scripts run: the kernel in a throwaway lab (packetdrill's environment reproduced) or
any stack on any link; opening one for a run."""

from __future__ import annotations

import logging
import os
import pathlib
import random
import socket
from collections.abc import Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Final

import trio

from .. import lab as lab_mod
from .._engine import Engine
from .._netns import run_in_netns
from .._open import open_engine
from . import syscalls
from .results import _EcnTap

__all__ = ["PACKETDRILL_SYSCTLS", "DEFAULT_PORT", "LabTarget", "LinkTarget"]

log = logging.getLogger("tcpemu.packetdrill")

PACKETDRILL_SYSCTLS: Final[Mapping[str, str]] = {
    # the environment packetdrill's scripts are written for: TCP features on,
    # the classic buffer sizes (their window scale and SYN windows), no
    # remembered metrics between connections, MTU probing off
    "net.ipv4.tcp_timestamps": "1",
    "net.ipv4.tcp_sack": "1",
    "net.ipv4.tcp_dsack": "1",
    "net.ipv4.tcp_window_scaling": "1",
    "net.ipv4.tcp_rmem": "4096 87380 6291456",
    "net.ipv4.tcp_wmem": "4096 16384 4194304",
    "net.ipv4.tcp_reordering": "3",
    "net.ipv4.tcp_mtu_probing": "0",
    "net.ipv4.tcp_no_metrics_save": "1",
    "net.ipv4.tcp_early_retrans": "3",
    "net.ipv4.tcp_min_tso_segs": "2",
    "net.ipv4.tcp_fastopen": "0",
}
"""TCP sysctls pinned in the IUT namespace before each script (after the host's own tcp_* values)."""

DEFAULT_PORT: Final = 8080


# ------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class LabTarget:
    """The Linux kernel of this host in a throwaway lab (a fresh one per script).

    ``sysctls`` are pinned in the IUT namespace after :data:`PACKETDRILL_SYSCTLS`.
    """

    sysctls: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LinkTarget:
    """Any stack reachable over ``ifname`` (in namespace ``netns``): the tester uses
    ``remote_ip`` and ``tester_mac`` and sends to the stack at ``local_ip``
    (``local_mac``, found with ARP/NDP when None).  ``handler`` makes the
    system calls; without one, scripts with system calls are skipped.
    Shell lines run only when ``netns`` is given, inside it.
    """

    ifname: str
    local_ip: str
    remote_ip: str
    tester_mac: str
    local_mac: str | None = None
    netns: str | None = None
    handler: object | None = None


@dataclass(slots=True)
class _Setup:
    """What one run uses: the engine, both addresses and MACs, and the syscall handler."""

    engine: Engine
    stack_ip: str
    tester_ip: str
    tester_mac: str
    stack_mac: str | None
    handler: object | None
    shell_netns: str | None
    iut_ifname: str | None = None


def _host_tcp_sysctls() -> dict[str, str]:
    """The host's own net.ipv4.tcp_* values (read only): a new namespace starts from the
    kernel's defaults, packetdrill runs with the host's."""
    out = {}
    base = pathlib.Path("/proc/sys/net/ipv4")
    for path in sorted(base.glob("tcp_*")):
        try:
            if not os.access(path, os.W_OK):
                continue
            out[f"net.ipv4.{path.name}"] = " ".join(path.read_text().split())
        except OSError:
            continue
    return out


def _pin_sysctls(netns: str, values: Mapping[str, str]) -> list[str]:
    """Write sysctls in ``netns`` one by one; the ones the namespace refuses are returned, not raised."""
    refused = []

    def work() -> None:
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            try:
                with open(path) as f:
                    if " ".join(f.read().split()) == value:
                        continue
                with open(path, "w") as f:
                    f.write(value)
            except OSError as exc:
                refused.append(f"{key}={value} ({exc.strerror})")

    run_in_netns(netns, work)
    return refused


async def _open_target(
    stack: AsyncExitStack,
    target: LabTarget | LinkTarget,
    v6: bool,
    capture: pathlib.Path,
    flags: Mapping[str, str],
    rng: random.Random,
) -> _Setup:
    port = int(flags.get("bind_port", DEFAULT_PORT))
    connect_port = int(flags.get("connect_port", DEFAULT_PORT))
    if isinstance(target, LinkTarget):
        engine = await stack.enter_async_context(
            open_engine(
                target.ifname,
                netns=target.netns,
                capture=_EcnTap(capture),
                rng=random.Random(rng.getrandbits(64)),
            )
        )
        stack_mac = target.local_mac
        if stack_mac is None:
            stack_mac = await engine.resolve(
                target.local_ip, local_ip=target.remote_ip, local_mac=target.tester_mac
            )
        return _Setup(
            engine,
            target.local_ip,
            target.remote_ip,
            target.tester_mac,
            stack_mac,
            target.handler,
            target.netns,
        )
    lab = await stack.enter_async_context(lab_mod.open_lab(iut_sysctls=dict(PACKETDRILL_SYSCTLS)))
    host = await trio.to_thread.run_sync(_host_tcp_sysctls)
    values = {**host, **PACKETDRILL_SYSCTLS, **target.sysctls}
    refused = await trio.to_thread.run_sync(_pin_sysctls, lab.iut.netns, values)
    if refused:
        log.debug("sysctls the IUT namespace refused: %s", "; ".join(refused))
    # packetdrill gives IPv6 runs 20 bytes more MTU, so that a script's MSS is the same over both
    mtu = int(flags.get("mtu", 1500)) + (20 if v6 else 0)
    if mtu != 1500:
        for host_ in (lab.iut, lab.tst):
            await trio.run_process(["ip", "-n", host_.netns, "link", "set", host_.ifname, "mtu", str(mtu)])
    # packetdrill's scripts name its tun device in tc and ip commands
    await trio.run_process(
        ["ip", "-n", lab.iut.netns, "link", "property", "add", "dev", lab.iut.ifname, "altname", "tun0"],
        check=False,
        capture_stderr=True,
    )
    version = 6 if v6 else 4
    engine = await stack.enter_async_context(
        open_engine(
            lab.tst.ifname,
            netns=lab.tst.netns,
            capture=_EcnTap(capture),
            rng=random.Random(rng.getrandbits(64)),
        )
    )
    stack_ip, tester_ip = str(lab.iut.address(version)), str(lab.tst.address(version))
    handler = await trio.to_thread.run_sync(
        syscalls.KernelSyscalls,
        lab.iut.netns,
        socket.AF_INET6 if v6 else socket.AF_INET,
        (stack_ip, port),
        (tester_ip, connect_port),
    )
    return _Setup(
        engine, stack_ip, tester_ip, lab.alien_mac, lab.iut.mac, handler, lab.iut.netns, lab.iut.ifname
    )
