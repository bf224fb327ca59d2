"""Send a stream as segments in a chosen order; the IUT delivers it in order."""

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
        await conn.wait_open(timeout=5)
        data = b"first-second-third-"
        cuts = [(0, 6), (6, 13), (13, len(data))]
        base = conn.next_seqn
        for a, b in [cuts[2], cuts[0], cuts[1]]:  # last piece first
            await conn.send_msg(data[a:b], seq=(base + a) % 2**32)  # explicit seq: nothing advances
        conn.update_sent_seq(len(data))  # now account for what went out
        received = b""
        with trio.fail_after(5):
            while len(received) < len(data):
                received += await iut.recv(100)
        assert received == data
        # once the gap is filled the kernel acknowledges everything
        await conn.wait_until(lambda c: c.last_ackn_got == c.next_seqn, timeout=5)
        iut.close()


if __name__ == "__main__":
    trio.run(main)
