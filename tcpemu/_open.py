"""open_engine: an engine on a link, its pump and timers in a nursery the context owns."""

from __future__ import annotations

import itertools
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import trio

from . import linkcheck, net
from ._args import _check_bool, _check_int, _check_timeout
from ._engine import _CLAIMED, _OPEN, ENGINE_CONTEXT, Engine, engines_on
from ._errors import (
    LabError,
    UsageError,
)
from ._io import FrameLink, PacketLink, PacketRing, TunLink
from .capture import LINKTYPE_ETHERNET, LINKTYPE_RAW, PcapngWriter
from .core import (
    check_rto,
)
from .faults import Faults
from .wire import (
    IPAddress,
)

log = logging.getLogger("tcpemu.engine")
_capture_seq = itertools.count(1)


def _capture_writer(
    capture: str | os.PathLike[str] | PcapngWriter | None, ifname: str, l3: bool
) -> PcapngWriter | None:
    linktype = LINKTYPE_RAW if l3 else LINKTYPE_ETHERNET
    if isinstance(capture, PcapngWriter):
        if capture.linktype != linktype:
            raise UsageError(
                f"capture: the writer's link type is {capture.linktype}, the link's {linktype} "
                "(LINKTYPE_RAW for a link without Ethernet header)"
            )
        return capture
    if capture is None:
        context = ENGINE_CONTEXT.get()
        directory = context.capture_dir if context is not None else None
        if directory is None:
            return None
        capture = directory / f"{ifname}-{next(_capture_seq)}.pcapng"
    return PcapngWriter(capture, ifname=ifname, linktype=linktype)


def _open_link(ifname: str, netns: str | None, ring: bool, attach: str) -> FrameLink:
    if attach != "packet":
        return TunLink(ifname, netns, tap=attach == "tap")
    if ring:
        try:
            return PacketRing(ifname, netns)
        except (UsageError, LabError):
            raise
        except OSError as exc:
            log.warning("%s: no PACKET_MMAP ring (%s); reading with recv()", ifname, exc)
    return PacketLink(ifname, netns)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaves = list(_leaves(group))
    return leaves[0] if len(leaves) == 1 else group


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for e in exc.exceptions:
            yield from _leaves(e)
    else:
        yield exc


@contextmanager
def _single_exception() -> Iterator[None]:
    """No ExceptionGroup escapes a public context manager when one exception is inside."""
    try:
        yield
    except BaseExceptionGroup as group:
        inner = _unwrap(group)
        if inner is group:
            raise
        raise inner from None


@asynccontextmanager
async def open_engine(
    ifname: str | None = None,
    *,
    netns: str | None = None,
    link: FrameLink | None = None,
    rng: random.Random | None = None,
    seed: int | None = None,
    max_queue: int = 4096,
    ring: bool = True,
    busy_poll: float = 0.0,
    capture: str | os.PathLike[str] | PcapngWriter | None = None,
    trace_depth: int = 1000,
    reliable: bool = False,
    rto: float = 0.2,
    faults_out: Faults | None = None,
    faults_in: Faults | None = None,
    answer_neighbours: bool | None = None,
    attach: str = "packet",
) -> AsyncIterator[Engine]:
    """Open a packet socket on ``ifname`` (inside namespace ``netns``) and run its pump.

    Frames are read through a PACKET_MMAP ring (``ring=False``: one
    ``recv`` per frame).  ``link`` replaces the packet socket (for example a
    :class:`~tcpemu.MemoryLink`).  ``attach="tun"`` (or ``"tap"``) owns the
    file descriptor of TUN (TAP) device ``ifname`` instead, made if it does
    not exist: the IUT is then the kernel of that namespace, routed through
    the device (see :class:`~tcpemu.TunLink`).  On a link without an
    Ethernet header (TUN, IP tunnels, WireGuard) connections take no MACs.  ISNs draw from ``rng`` or from
    ``random.Random(seed)``.  On exit the pump stops and the socket closes;
    connections are destroyed without sending anything.
    """
    made_link = link is None
    # every argument checked before anything is opened: a refusal leaves nothing behind
    if ifname is not None and (not isinstance(ifname, str) or not 0 < len(ifname) < 16):
        raise UsageError(f"open_engine: ifname must be an interface name (1..15 chars), got {ifname!r}")
    if netns is not None and not isinstance(netns, str):
        raise UsageError(f"open_engine: netns must be a namespace name, got {netns!r}")
    if rng is not None and not isinstance(rng, random.Random):
        raise UsageError(f"open_engine: rng must be a random.Random, got {rng!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UsageError(f"open_engine: seed must be an int, got {seed!r}")
    _check_int("open_engine: max_queue", max_queue, 1, 1 << 30)
    _check_int("open_engine: trace_depth", trace_depth, 0, 1 << 24)
    _check_timeout("open_engine: busy_poll", busy_poll)
    check_rto(rto)
    for what, flag in (("ring", ring), ("reliable", reliable)):
        _check_bool(f"open_engine: {what}", flag)
    if answer_neighbours is not None:
        _check_bool("open_engine: answer_neighbours", answer_neighbours)
    for what, faults in (("faults_out", faults_out), ("faults_in", faults_in)):
        if faults is not None and not isinstance(faults, Faults):
            raise UsageError(f"open_engine: {what} must be tcpemu.faults.Faults, got {faults!r}")
    if attach not in ("packet", "tun", "tap"):
        raise UsageError(f"open_engine: attach must be 'packet', 'tun' or 'tap', got {attach!r}")
    if link is None:
        if ifname is None:
            raise UsageError("open_engine needs an interface name (or link=)")
        for other in engines_on(netns, ifname):
            # two pumps on one link would both answer every SYN, with different ISNs
            raise UsageError(
                f"open_engine: an engine is open on {ifname!r} (netns {netns!r}) already ({other!r}); "
                "one engine serves any number of connections and listeners: share that one"
            )
        # what in the link or its namespace would get in the engine's way, said as
        # warnings naming the setting (a link that cannot be checked is no reason to stop)
        if attach == "packet":  # a TUN/TAP of our own is made for us, and nobody else's
            findings = await trio.to_thread.run_sync(linkcheck.check_link_quietly, ifname, netns)
            linkcheck.warn_findings(findings, ifname, netns, stacklevel=3)  # at the user's `async with`
        if (netns, ifname) in _CLAIMED:
            raise UsageError(f"open_engine: an engine is being opened on {ifname!r} (netns {netns!r})")
        _CLAIMED.add((netns, ifname))
        try:
            link = await trio.to_thread.run_sync(_open_link, ifname, netns, ring, attach)
        finally:
            _CLAIMED.discard((netns, ifname))
    elif attach != "packet":
        raise UsageError("open_engine: attach= names how to open ifname; with link= give neither")
    if rng is None:
        rng = random.Random(seed)
    try:
        writer = _capture_writer(capture, ifname or "link", bool(getattr(link, "l3", False)))
        owned: frozenset[IPAddress] = frozenset()
        if answer_neighbours is None and made_link and netns is not None:
            # a host of this namespace answers for its own addresses: leave those to it
            owned = frozenset(await trio.to_thread.run_sync(net.addresses, netns))
    except BaseException:
        if made_link:
            link.close()  # ours: nothing is left open when opening fails half way
        raise
    engine = Engine(
        link,
        rng=rng,
        max_queue=max_queue,
        name=ifname or "link",
        busy_poll=busy_poll,
        trace_depth=trace_depth,
        capture=writer,
        reliable=reliable,
        rto=rto,
        faults_out=faults_out,
        faults_in=faults_in,
        answer_neighbours=answer_neighbours,
        owned_addresses=owned,
    )
    context = ENGINE_CONTEXT.get()
    if context is not None:
        context.registry.append(engine)
    if made_link:
        engine._where = (netns, ifname)  # type: ignore[assignment]
        _OPEN.add(engine)
    try:
        engine._update_filter()
        with _single_exception():
            async with trio.open_nursery() as nursery:
                await nursery.start(engine._pump)
                await nursery.start(engine._timers)
                try:
                    yield engine
                finally:
                    nursery.cancel_scope.cancel()
    finally:
        engine._close_now()
