"""The IUT (the kernel in a test namespace) connects; the emulator answers and sends 1 KiB."""

import trio

import tcpemu
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    async with open_lab() as lab:  # two fresh namespaces + veth; removed on exit
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, seed=1) as engine:
            conn = engine.connection(
                tcpemu.SERVER,
                local=(str(lab.tst.ip), 20000),
                remote=(str(lab.iut.ip), None),  # any port of the IUT
                local_mac=lab.alien_mac,
                remote_mac=lab.iut.mac,
            )
            iut = await lab.iut.socket()  # a kernel socket inside the IUT namespace
            connect_nowait(iut, (str(lab.tst.ip), 20000))
            await conn.wait_open(timeout=5)  # answer the SYN, wait for the ACK
            await conn.send_msg(b"x" * 1024)  # seq and ack AUTO
            received = b""
            while len(received) < 1024:
                received += await iut.recv(4096)
            assert received == b"x" * 1024
            # the kernel's ACK, in packetdrill's notation: numbers relative to the ISNs,
            # the window and options left out match any
            ack = await conn.expect(". 1:1(0) ack 1025", within=1)
            print("got", ack)  # . 1:1(0) ack 1025 win 63216 <nop,nop,TS val ... ecr ...>
            print("state:", conn.state.name, "next_seqn:", conn.next_seqn, "next_ackn:", conn.next_ackn)
            iut.close()


if __name__ == "__main__":
    trio.run(main)
