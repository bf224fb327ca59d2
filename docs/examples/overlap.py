"""Overlapping segments with different bytes: what does Linux deliver?

Linux keeps the bytes it already has: a segment that starts before
rcv_nxt is trimmed to its new part, so "AAAA" then "BBBB" two bytes later
reads as "AAAABB".
"""

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
        base = conn.next_seqn
        await conn.send_msg(b"AAAA", seq=base)
        await conn.send_msg(b"BBBB", seq=(base + 2) % 2**32)  # overlaps the last two bytes
        conn.update_sent_seq(6)
        received = b""
        with trio.fail_after(5):
            while len(received) < 6:
                received += await iut.recv(100)
        assert received == b"AAAABB", received
        # the kernel's ACKs say the same: the four A's, then the two new bytes of the B's
        await conn.expect(". 1:1(0) ack 5", within=1)
        await conn.expect(". 1:1(0) ack 7", within=1)
        iut.close()


if __name__ == "__main__":
    trio.run(main)
