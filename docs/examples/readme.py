"""The README's example, whole (the test suite checks the README shows this code)."""

import trio

import tcpemu
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    async with open_lab() as lab:                       # two fresh namespaces + veth
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
            conn = engine.connection(
                tcpemu.SERVER,
                local=(str(lab.tst.ip), 20000), remote=(str(lab.iut.ip), None),
                local_mac=lab.alien_mac, remote_mac=lab.iut.mac,
            )
            iut = await lab.iut.socket()                # a kernel socket in the IUT namespace
            connect_nowait(iut, (str(lab.tst.ip), 20000))
            syn = await conn.wait_msg(timeout=1)        # the IUT sits in SYN-SENT until...
            await conn.wait_open(timeout=1)             # ...we answer
            await conn.send_msg(b"x" * 1024)            # seq/ack AUTO
            msg = await conn.expect(". 1:1(0) ack 1025", within=1)  # packetdrill's notation
            print(msg)                                  # . 1:1(0) ack 1025 win ... <nop,nop,TS val ...>
            assert syn.flags == tcpemu.TcpFlags.SYN and msg.ack == conn.next_seqn
            iut.close()


if __name__ == "__main__":
    trio.run(main)
