"""802.1Q on a real link: tagged frames through the kernel's packet sockets.

The kernel takes a received tag off before a packet socket sees the frame and
keeps it in the ring's header; the engine puts it back, so a connection sees
its VLAN.  Two engines talk over the lab's veth on VLAN 7, each through the
real raw-socket path.  The Linux kernel as the IUT over a VLAN needs the 8021q
module for a VLAN device; where it is missing, that test says so and skips.
"""

from __future__ import annotations

import glob
import ipaddress
import os

import pytest
import trio

import tcpemu
from tcpemu import CLIENT, SERVER, TcpState, net
from tcpemu.lab import Lab, connect_nowait

from .helpers import recv_exactly

pytestmark = pytest.mark.e2e

SERVER_MAC = "02:00:00:00:0e:07"


async def test_two_engines_talk_over_a_tagged_veth(tcpemu_lab: Lab):
    lab = tcpemu_lab
    async with (
        tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=1) as client_engine,
        tcpemu.open_engine(lab.iut.ifname, netns=lab.iut.netns, seed=2) as server_engine,
    ):
        server = server_engine.connection(
            SERVER,
            local=(str(lab.iut.ip), 30000),
            remote=(str(lab.tst.ip), None),
            local_mac=SERVER_MAC,
            remote_mac=lab.alien_mac,
            vlan=7,
        )
        untagged_twin = server_engine.connection(
            SERVER,
            local=(str(lab.iut.ip), 30001),
            remote=(str(lab.tst.ip), None),
            local_mac=SERVER_MAC,
            remote_mac=lab.alien_mac,
        )
        client = client_engine.connection(
            CLIENT,
            local=(str(lab.tst.ip), 20000),
            remote=(str(lab.iut.ip), 30000),
            local_mac=lab.alien_mac,
            remote_mac=SERVER_MAC,
            vlan=7,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.wait_open, 5)
            await client.wait_open(timeout=5)
        assert client.state is TcpState.ESTABLISHED and server.state is TcpState.ESTABLISHED
        await client.send_msg(b"tagged")
        msg = await server.recv_msg(timeout=5, ack=False)
        assert (msg.payload, msg.vlan) == (b"tagged", 7)  # the tag the kernel kept aside, put back
        await server.send_msg(b"back on seven")
        reply = await client.recv_msg(timeout=5, ack=False)
        assert (reply.payload, reply.vlan) == (b"back on seven", 7)
        assert untagged_twin.statistics().segments_received == 0


def _vlan_devices() -> bool:
    """The 8021q module is loaded, built in, or there to be loaded."""
    release = os.uname().release
    return os.path.exists("/sys/module/8021q") or bool(
        glob.glob(f"/lib/modules/{release}/kernel/net/8021q/8021q.ko*")
    )


@pytest.mark.skipif(
    not _vlan_devices(),
    reason="the kernel has no 802.1Q VLAN devices here (no 8021q module): the kernel IUT cannot "
    "take tagged frames; the engine's side of VLANs is tested above and in tests/unit/test_vlan.py",
)
async def test_the_kernel_as_the_iut_over_a_vlan(tcpemu_lab: Lab):
    lab = tcpemu_lab
    iut_ip, emu_ip = ipaddress.ip_address("198.18.7.1"), ipaddress.ip_address("198.18.7.2")

    def add_vlan_device() -> None:
        with net.NetNS(lab.iut.netns) as ns:
            parent = ns.link_lookup(ifname=lab.iut.ifname)[0]
            ns.link("add", ifname="iut0.7", kind="vlan", link=parent, vlan_id=7)

    await trio.to_thread.run_sync(add_vlan_device)
    await trio.to_thread.run_sync(net.add_address, lab.iut.netns, "iut0.7", iut_ip, 24)
    await trio.to_thread.run_sync(net.link_up, lab.iut.netns, "iut0.7")
    async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=3) as engine:
        conn = engine.connection(
            SERVER,
            local=(str(emu_ip), 20000),
            remote=(str(iut_ip), None),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
            vlan=7,
        )
        await trio.to_thread.run_sync(net.neighbour_replace, lab.iut.netns, "iut0.7", emu_ip, lab.alien_mac)
        iut = await lab.iut.socket()
        connect_nowait(iut, (str(emu_ip), 20000))
        syn = await conn.wait_msg(timeout=5)
        assert syn.vlan == 7
        await conn.wait_open(timeout=5)
        await conn.send_msg(b"over seven")
        assert await recv_exactly(iut, 10) == b"over seven"
