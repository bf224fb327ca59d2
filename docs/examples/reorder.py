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
        # the kernel's ACKs: a duplicate one for the piece beyond the gap, then one
        # for each piece before it, the last acknowledging everything (20 = 1 + 19)
        for ackn in (1, 7, 20):
            print("got", await conn.expect(f". 1:1(0) ack {ackn}", within=1))
        assert conn.last_ackn_got == conn.next_seqn
        iut.close()


if __name__ == "__main__":
    trio.run(main)
