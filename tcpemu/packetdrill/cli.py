"""``tcpemu packetdrill [options] SCRIPT...``: run packetdrill scripts and print one line per script.

:func:`register_cli` adds the sub-command to the ``tcpemu`` parser;
:func:`cli_main` runs it and returns the exit status (1 on any failure).
"""

from __future__ import annotations

import argparse
import importlib
import os
import pathlib
import sys
from typing import TextIO

import trio

from .. import net
from .._errors import TcpemuError, UsageError
from ..wire import parse_mac
from .runner import LabTarget, LinkTarget, Result, run_scripts, summary

__all__ = ["register_cli", "cli_main", "collect_scripts", "load_handler"]


def register_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Add ``packetdrill`` to the ``tcpemu`` command's sub-commands; returns its parser."""
    p = subparsers.add_parser(
        "packetdrill",
        help="run packetdrill scripts against the kernel in a throwaway lab, or over a link",
        description=(
            "Run packetdrill scripts: one line per script (PASS, FAIL with the first departing line, "
            "SKIP unsupported: <construct>), then 'N passed, N failed, N skipped'; exit status 1 on any "
            "failure.  Default target: the Linux kernel in a throwaway lab with packetdrill's sysctls. "
            "packetdrill's addresses (192.168.0.1, 192.0.2.1, fd3d:...) are mapped onto the lab's."
        ),
    )
    p.add_argument(
        "scripts", nargs="+", metavar="SCRIPT", help="script files, or directories searched for *.pkt"
    )
    p.add_argument(
        "--ip_version", "--ip-version", choices=["ipv4", "ipv6"], help="override the scripts' --ip_version"
    )
    p.add_argument("--tolerance_usecs", "--tolerance-usecs", type=int, help="timing tolerance (default 4000)")
    p.add_argument(
        "--tolerance_percent", "--tolerance-percent", type=float, help="tolerance as %% of the gap"
    )
    p.add_argument("--jobs", "-j", type=int, default=1, help="scripts run at once, each in its own lab")
    p.add_argument(
        "--artifacts", default="packetdrill-artifacts", help="where captures and traces of failures go"
    )
    p.add_argument(
        "--sysctl", action="append", default=[], metavar="KEY=VALUE", help="pin in the IUT namespace"
    )
    p.add_argument("--seed", type=int, help="seed of the tester's ISNs and ports")
    link = p.add_argument_group("another target: any stack over a link")
    link.add_argument("--link", metavar="IFNAME", help="run the packet lines over this interface")
    link.add_argument("--netns", metavar="NS", help="the namespace of --link (shell lines run there)")
    link.add_argument("--local-ip", "--local_ip", metavar="A", help="the address of the stack under test")
    link.add_argument("--remote-ip", "--remote_ip", metavar="B", help="the tester's address")
    link.add_argument("--remote-mac", metavar="M", help="the tester's MAC (default: the interface's)")
    link.add_argument("--local-mac", metavar="M", help="the stack's MAC (default: asked with ARP/NDP)")
    link.add_argument(
        "--handler",
        metavar="MODULE:NAME",
        help="the syscall handler: an object, or a callable returning one (without it, scripts with "
        "system calls are skipped on --link)",
    )
    p.set_defaults(func=cli_main)
    return p


def collect_scripts(paths: list[str]) -> list[str]:
    """Files as given; directories searched (recursively, sorted) for ``*.pkt``."""
    out: list[str] = []
    for path in paths:
        p = pathlib.Path(path)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*.pkt"))
        elif p.exists():
            out.append(path)
        else:
            raise UsageError(f"no such script or directory: {path!r}")
    return out


def load_handler(spec: str) -> object:
    """``module:name``: the object named, called first if it is a class or a function."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--handler must be MODULE:NAME, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--handler {spec!r}: cannot import {module_name!r}: {exc}") from None
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise UsageError(f"--handler {spec!r}: {module_name} has no {attr!r}") from None
    return obj() if callable(obj) else obj


def _interface_mac(ifname: str, netns: str | None) -> str:
    if netns is not None:
        return net.link_mac(netns, ifname)
    return pathlib.Path(f"/sys/class/net/{ifname}/address").read_text().strip()


def _target(args: argparse.Namespace) -> LabTarget | LinkTarget:
    if args.link is None:
        sysctls = {}
        for item in args.sysctl:
            key, sep, value = item.partition("=")
            if not sep or not key.startswith("net."):
                raise UsageError(f"--sysctl must be net.KEY=VALUE, got {item!r}")
            sysctls[key] = value
        for name in ("netns", "local_ip", "remote_ip", "remote_mac", "local_mac", "handler"):
            if getattr(args, name) is not None:
                raise UsageError(f"--{name.replace('_', '-')} needs --link (the lab target chooses its own)")
        return LabTarget(sysctls)
    if args.local_ip is None or args.remote_ip is None:
        raise UsageError("--link needs --local-ip (the stack's address) and --remote-ip (the tester's)")
    tester_mac = args.remote_mac or _interface_mac(args.link, args.netns)
    parse_mac(tester_mac)
    if args.local_mac is not None:
        parse_mac(args.local_mac)
    handler = load_handler(args.handler) if args.handler else None
    return LinkTarget(
        args.link, args.local_ip, args.remote_ip, tester_mac, args.local_mac, args.netns, handler
    )


def cli_main(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``tcpemu packetdrill``; returns the exit status (0 all passed or skipped, 1 otherwise)."""
    out = out or sys.stdout
    try:
        scripts = collect_scripts(args.scripts)
        target = _target(args)
        if args.jobs < 1:
            raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    except (UsageError, OSError) as exc:
        print(f"tcpemu packetdrill: {exc}", file=sys.stderr)
        return 2
    if os.geteuid() != 0 and isinstance(target, LabTarget):
        print("tcpemu packetdrill: the lab needs root (namespaces, veth, raw sockets)", file=sys.stderr)
        return 2
    results: list[Result] = []

    async def main() -> None:
        results.extend(
            await run_scripts(
                scripts,
                jobs=args.jobs,
                target=target,
                ip_version=args.ip_version,
                tolerance_usecs=args.tolerance_usecs,
                tolerance_percent=args.tolerance_percent,
                artifacts=args.artifacts,
                seed=args.seed,
                on_result=lambda r: print(r.line_text(), file=out, flush=True),
            )
        )

    try:
        trio.run(main)
    except TcpemuError as exc:
        print(f"tcpemu packetdrill: {exc}", file=sys.stderr)
        return 2
    print(summary(results), file=out, flush=True)
    return 1 if any(r.verdict == "FAIL" for r in results) else 0


def main(argv: list[str] | None = None) -> int:
    """``python -m tcpemu.packetdrill.cli``: the sub-command on its own, until ``tcpemu`` carries it."""
    parser = argparse.ArgumentParser(prog="tcpemu")
    register_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
