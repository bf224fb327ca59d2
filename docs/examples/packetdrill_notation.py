"""Segments in packetdrill's notation: expect what the kernel sends, send what the script says."""

import trio

import tcpemu
from tcpemu import notation
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
        syn = await notation.expect(conn, "S 0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale *>", within=2)
        print("got", notation.format_message(syn, conn))
        # our SYN-ACK exactly as written: no window scaling, no SACK, our own TSval
        tsval = syn.timestamps[0]
        await notation.send(conn, f"S. 0:0(0) ack 1 win 65535 <mss 1460,nop,nop,TS val 100 ecr {tsval}>")
        await notation.expect(conn, ". 1:1(0) ack 1 <nop,nop,TS val * ecr 100>", within=1)
        await notation.expect_nothing(conn, for_=0.1)  # the handshake is over: the kernel is quiet
        await iut.send(b"hello")
        msg = await notation.expect(conn, "P. 1:6(5) ack 1", within=1, ack=True)
        assert msg.payload == b"hello"
        await notation.send(conn, "P. 1:4(3) ack 6 <nop,nop,TS val 110 ecr 0>", payload=b"bye")
        assert await iut.recv(10) == b"bye"
        await notation.expect(conn, ". 6:6(0) ack 4", within=1)
        iut.close()
        fin = await notation.expect(conn, "F. 6:6(0) ack 4", within=1)
        print("got", notation.format_message(fin, conn))


if __name__ == "__main__":
    trio.run(main)
