"""Advertise a zero window: the kernel probes it; opening the window lets the data through."""

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
            window=0,  # already in the SYN-ACK
        )
        iut = await lab.iut.socket()
        connect_nowait(iut, (str(lab.tst.ip), 20000))
        await conn.wait_open(timeout=5)
        await iut.send(b"waiting for room")
        # Linux's persist probes are pure ACKs with seq one below snd_una (relative 0)
        probe = await conn.expect(". 0:0(0) ack 1", within=5)
        print("got", probe)
        conn.window = 65535
        await conn.send_ack()  # a window update
        data = await conn.recv_data(idle=0.3, timeout=5)
        assert data == b"waiting for room"
        iut.close()


if __name__ == "__main__":
    trio.run(main)
