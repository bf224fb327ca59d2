"""IPv6, and an IUT with no static neighbour entry: the engine answers NDP (and ARP)."""

import ipaddress
import socket

import trio

import tcpemu
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    async with open_lab(alien_neighbour=False) as lab:  # no static entries at all
        emu_ip = ipaddress.ip_address("2001:db8::5")  # an address no host owns
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
            conn = engine.connection(
                tcpemu.SERVER,
                local=(str(emu_ip), 20000),
                remote=(str(lab.iut.address(6)), None),
                local_mac=lab.alien_mac,
                remote_mac=None,  # learnt from the SYN
            )
            iut = await lab.iut.socket(socket.AF_INET6)
            connect_nowait(iut, (str(emu_ip), 20000))  # the IUT solicits our MAC first
            await conn.wait_open(timeout=5)
            await conn.send_msg(b"over IPv6")
            assert await iut.recv(100) == b"over IPv6"
            print(await lab.neighbours(lab.iut))  # 2001:db8::5 -> the alien MAC
            # and the other way: find the IUT's MAC before connecting to it
            mac = await engine.resolve(lab.iut.address(6), local_ip=emu_ip, local_mac=lab.alien_mac)
            assert mac == lab.iut.mac
            iut.close()


if __name__ == "__main__":
    trio.run(main)
