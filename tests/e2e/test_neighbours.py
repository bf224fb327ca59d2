"""An IUT with no static neighbour entry: the engine answers ARP and NDP for its
emulated addresses, and finds the IUT's MAC itself."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import trio

import tcpemu
from tcpemu.lab import connect_nowait, open_lab

from .conftest import connect_result, family, recv_exactly

pytestmark = pytest.mark.e2e

UNOWNED = {4: ipaddress.ip_address("198.18.0.5"), 6: ipaddress.ip_address("2001:db8::5")}


async def test_iut_without_static_entries_connects_to_and_is_connected_from_the_emulator(ipv):
    async with open_lab(alien_neighbour=False) as lab:
        assert not [n for n in await lab.neighbours(lab.iut) if n[1] == lab.alien_mac]
        emu_ip = UNOWNED[ipv]  # no host in the lab owns it
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
            # the IUT connects: it asks for the emulator's MAC first
            conn = engine.connection(
                tcpemu.SERVER,
                local=(str(emu_ip), 20000),
                remote=(str(lab.iut.address(ipv)), None),
                local_mac=lab.alien_mac,
                remote_mac=None,  # learnt from the SYN
            )
            iut = await lab.iut.socket(family(ipv))
            connect_nowait(iut, (str(emu_ip), 20000))
            await conn.wait_open(timeout=5)
            assert await connect_result(iut) == 0
            assert conn.remote_mac == bytes.fromhex(lab.iut.mac.replace(":", ""))
            await conn.send_msg(b"found")
            assert await recv_exactly(iut, 5) == b"found"
            entries = {ip: mac for ip, mac, _ in await lab.neighbours(lab.iut)}
            assert entries[str(emu_ip)] == lab.alien_mac  # learnt from our answer
            assert engine.statistics().neighbour_replies >= 1

            # the emulator connects: it asks for the IUT's MAC itself
            mac = await engine.resolve(lab.iut.address(ipv), local_ip=emu_ip, local_mac=lab.alien_mac)
            assert mac == lab.iut.mac
            # and a CLIENT connection given no MAC finds it by itself in wait_open
            listener = await lab.iut.socket(family(ipv))
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await listener.bind((str(lab.iut.address(ipv)), 30000))
            listener.listen(1)
            client = engine.connection(
                tcpemu.CLIENT,
                local=(str(emu_ip), 20001),
                remote=(str(lab.iut.address(ipv)), 30000),
                local_mac=lab.alien_mac,
                remote_mac=None,
            )
            await client.wait_open(timeout=5)
            assert client.remote_mac == bytes.fromhex(mac.replace(":", ""))
            with trio.fail_after(5):
                accepted, peer = await listener.accept()
            assert peer[0] == str(emu_ip)
            for s in (iut, listener, accepted):
                s.close()


async def test_the_engine_leaves_owned_addresses_to_their_host():
    async with (
        open_lab(alien_neighbour=False) as lab,
        tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine,
    ):
        engine.connection(
            tcpemu.SERVER,
            local=(str(lab.tst.ip), 20000),  # the tester's own address
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,
            remote_mac=None,
        )
        assert not engine._neighbour_macs
        nobody = engine.connection(
            tcpemu.CLIENT,
            local=(str(lab.tst.ip), 1),
            remote=("198.18.0.78", 2),  # no host has it: wait_open cannot find a MAC
            local_mac=lab.alien_mac,
            remote_mac=None,
        )
        assert engine.statistics().frames_sent == 0  # no SYN before the MAC is known
        with pytest.raises(tcpemu.TcpemuTimeoutError, match=r"no answer for 198\.18\.0\.78"):
            await nobody.wait_open(timeout=10)
        with pytest.raises(tcpemu.TcpemuTimeoutError, match=r"no answer for 198\.18\.0\.77"):
            await engine.resolve("198.18.0.77", local_ip="198.18.0.5", local_mac=lab.alien_mac, timeout=0.2)
