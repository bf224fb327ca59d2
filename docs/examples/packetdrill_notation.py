"""Segments in packetdrill's notation: expect what the kernel sends, send what the script says."""

import trio

import tcpemu
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    async with open_lab() as lab, tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
        conn = engine.connection(
            tcpemu.SERVER,
            local=(str(lab.tst.ip), 20000),
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
        )
        iut = await lab.iut.socket()
        connect_nowait(iut, (str(lab.tst.ip), 20000))
        # the kernel's SYN: flags, relative range, options as Linux orders them (TS val: any)
        syn = await conn.expect("S 0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale *>", within=2)
        print("got", syn)  # str(message): its own notation, numbers relative to the ISNs
        # our SYN-ACK exactly as written: no window scaling, no SACK, our own TSval
        tsval = syn.timestamps[0]
        await conn.send(f"S. 0:0(0) ack 1 win 65535 <mss 1460,nop,nop,TS val 100 ecr {tsval}>")
        await conn.expect(". 1:1(0) ack 1 <nop,nop,TS val * ecr 100>", within=1)
        await conn.expect_nothing(for_=0.1)  # the handshake is over: the kernel is quiet
        await iut.send(b"hello")
        msg = await conn.expect("P. 1:6(5) ack 1", within=1, ack=True)
        assert msg.payload == b"hello"
        await conn.send("P. 1:4(3) ack 6 <nop,nop,TS val 110 ecr 0>", payload=b"bye")
        assert await iut.recv(10) == b"bye"
        await conn.expect(". 6:6(0) ack 4", within=1)
        iut.close()
        fin = await conn.expect("F. 6:6(0) ack 4", within=1)
        print("got", fin)


if __name__ == "__main__":
    trio.run(main)
