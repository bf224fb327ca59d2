"""Two engines talk over VLAN 7 on the lab's veth: tags sent, tags seen."""

import trio

import tcpemu
from tcpemu.lab import open_lab

SERVER_MAC = "02:00:00:00:0e:07"


async def main() -> None:
    async with open_lab() as lab:
        async with (
            tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as near,
            tcpemu.open_engine(lab.iut.ifname, netns=lab.iut.netns) as far,
        ):
            server = far.connection(
                tcpemu.SERVER,
                local=(str(lab.iut.ip), 30000),
                remote=(str(lab.tst.ip), None),
                local_mac=SERVER_MAC,
                remote_mac=lab.alien_mac,
                vlan=7,
            )
            client = near.connection(
                tcpemu.CLIENT,
                local=(str(lab.tst.ip), 20000),
                remote=(str(lab.iut.ip), 30000),
                local_mac=lab.alien_mac,
                remote_mac=SERVER_MAC,
                vlan=7,
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.wait_open, 5)
                await client.wait_open(timeout=5)
            await client.send_msg(b"tagged")
            msg = await server.recv_msg(timeout=5, ack=False)
            print(msg, "on VLAN", msg.vlan)


trio.run(main)
