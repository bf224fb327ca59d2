"""Links without an Ethernet header, and an engine that owns its TUN/TAP device.

- Local mode (packetdrill's): the engine owns the file descriptor of a TUN
  (or TAP) device in one namespace whose own kernel is the IUT, routed
  through the device; no veth, no second namespace.
- A packet socket on a TUN netdev of a namespace of its own, the IUT in
  another, the two TUN devices joined by a relay of their descriptors (an
  IP tunnel in user space): frames are bare IP packets both ways.

Both run the kernel as the IUT both ways (it connects to the emulator, and the
emulator connects to it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import socket
from collections.abc import AsyncIterator

import pytest
import trio

import tcpemu
from tcpemu import CLIENT, SERVER, TcpState, TunLink, net
from tcpemu._netns import run_in_netns
from tcpemu.capture import read_pcapng
from tcpemu.lab import connect_nowait

from .helpers import recv_exactly, send_all

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.tcpemu_needs_root(
        "a TUN/TAP device needs /dev/net/tun, which only the host's root may open here"
    ),
]

IUT_IP, EMU_IP = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
EMU_MAC = "02:00:00:00:0e:01"


@contextlib.asynccontextmanager
async def namespaces(*roles: str) -> AsyncIterator[list[str]]:
    """Fresh namespaces named as labs are (so a killed run's are cleaned up), removed on exit."""
    tag = random.Random().randbytes(4).hex()
    names = [f"tcpemu-{os.getpid()}-{tag}-{role}" for role in roles]
    made: list[str] = []
    try:
        for name in names:
            await trio.to_thread.run_sync(net.create_netns, name)
            made.append(name)
        yield names
    finally:
        with trio.CancelScope(shield=True):
            for name in made:
                await trio.to_thread.run_sync(net.remove_netns, name)


async def iut_socket(ns: str) -> trio.socket.SocketType:
    raw = await trio.to_thread.run_sync(
        run_in_netns, ns, socket.socket, socket.AF_INET, socket.SOCK_STREAM, 0
    )
    return trio.socket.from_stdlib_socket(raw)


async def configure(ns: str, ifname: str, address: ipaddress.IPv4Address | None) -> None:
    if address is not None:
        await trio.to_thread.run_sync(net.add_address, ns, ifname, address, 24)
    await trio.to_thread.run_sync(net.link_up, ns, ifname)


async def exchange_with_iut_client(engine: tcpemu.Engine, ns: str, mac: str | None) -> None:
    """The IUT connects to an emulated server; data both ways; FIN both ways."""
    conn = engine.connection(
        SERVER, local=(str(EMU_IP), 20000), remote=(str(IUT_IP), None), local_mac=mac, remote_mac=None
    )
    iut = await iut_socket(ns)
    connect_nowait(iut, (str(EMU_IP), 20000))
    syn = await conn.wait_msg(timeout=5)
    assert syn.flags == tcpemu.TcpFlags.SYN and conn.state is TcpState.LISTEN  # held until we answer
    await conn.wait_open(timeout=5)
    with trio.fail_after(5):
        await trio.lowlevel.wait_writable(iut)
    assert iut.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    await conn.send_msg(b"to the kernel")
    assert await recv_exactly(iut, 13) == b"to the kernel"
    await send_all(iut, b"to the emulator")
    assert await conn.recv_exactly(15, timeout=5) == b"to the emulator"
    iut.shutdown(socket.SHUT_WR)
    await conn.wait_until(lambda c: c.fin_got, timeout=5)
    await conn.send_fin(timeout=5)
    assert conn.state is TcpState.CLOSED or conn.state is TcpState.LAST_ACK or conn.fin_got
    iut.close()


async def exchange_with_iut_server(engine: tcpemu.Engine, ns: str, mac: str | None, remote_mac: str | None):
    """The emulator connects to a kernel listener; data both ways; FIN both ways."""
    listener = await iut_socket(ns)
    await listener.bind((str(IUT_IP), 30000))
    listener.listen(4)
    conn = engine.connection(
        CLIENT, local=(str(EMU_IP), 20001), remote=(str(IUT_IP), 30000), local_mac=mac, remote_mac=remote_mac
    )
    await conn.wait_open(timeout=5)
    with trio.fail_after(5):
        iut, _ = await listener.accept()
    await conn.send_msg(b"hello kernel")
    assert await recv_exactly(iut, 12) == b"hello kernel"
    await send_all(iut, b"hello emulator")
    assert await conn.recv_exactly(14, timeout=5) == b"hello emulator"
    await conn.send_fin(timeout=5)
    assert await iut.recv(10) == b""  # the kernel saw our FIN
    iut.close()
    listener.close()


@pytest.mark.parametrize("attach", ["tun", "tap"])
async def test_local_mode_the_kernel_of_the_engines_own_namespace_both_ways(attach, tmp_path):
    async with namespaces("local") as (ns,):
        capture = tmp_path / f"{attach}.pcapng"
        async with tcpemu.open_engine(f"{attach}0", netns=ns, attach=attach, capture=capture) as engine:
            await configure(ns, f"{attach}0", IUT_IP)
            mac = EMU_MAC if attach == "tap" else None
            await exchange_with_iut_client(engine, ns, mac)
            # on TAP the CLIENT finds the kernel's MAC with ARP; TUN has none to find
            await exchange_with_iut_server(engine, ns, mac, None)
            stats = engine.statistics()
            assert stats.malformed == {} and stats.internal_errors == 0
            if attach == "tap":
                assert stats.neighbour_replies >= 1  # the kernel asked for the emulated address
        records = list(read_pcapng(capture))
        assert records, "the capture has the exchange"
        if attach == "tun":
            assert all(r.frame[0] >> 4 in (4, 6) for r in records)  # bare IP packets (LINKTYPE_RAW)
        else:
            assert all(r.frame[12:14] in (b"\x08\x00", b"\x08\x06", b"\x86\xdd") for r in records)


async def relay(a: TunLink, b: TunLink) -> None:
    """Join two TUN devices: what either's kernel routes out, the other's receives."""

    async def one_way(src: TunLink, dst: TunLink) -> None:
        while True:
            await trio.lowlevel.wait_readable(src.fileno())
            packets = src.recv_batch(64)
            if packets:
                dst.send_batch(packets)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_way, a, b)
        nursery.start_soon(one_way, b, a)


# the link check's GRO/GSO notes are for a TUN whose owner opened it with IFF_NAPI; the relay does not
@pytest.mark.filterwarnings("ignore::tcpemu.linkcheck.LinkWarning")
async def test_a_packet_socket_on_a_tun_link_reads_and_writes_bare_ip_both_ways():
    async with namespaces("iut", "tst") as (iut_ns, tst_ns):
        iut_tun = await trio.to_thread.run_sync(TunLink, "tun0", iut_ns)
        tst_tun = await trio.to_thread.run_sync(TunLink, "tun1", tst_ns)
        try:
            await configure(iut_ns, "tun0", IUT_IP)
            await configure(tst_ns, "tun1", None)  # the emulated address is nobody's there
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay, iut_tun, tst_tun)
                async with tcpemu.open_engine("tun1", netns=tst_ns) as engine:
                    assert engine._l3  # found from the link: no Ethernet header
                    await exchange_with_iut_client(engine, iut_ns, None)
                    await exchange_with_iut_server(engine, iut_ns, None, None)
                    stats = engine.statistics()
                    assert stats.malformed == {} and stats.frames_received > 8
                nursery.cancel_scope.cancel()
        finally:
            iut_tun.close()
            tst_tun.close()
