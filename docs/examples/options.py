"""Window scale, timestamps and SACK, negotiated with the kernel and honoured."""

import trio

import tcpemu
from tcpemu import TcpOption
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    async with open_lab() as lab, tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
        conn = engine.connection(
            tcpemu.SERVER,
            local=(str(lab.tst.ip), 20000),
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
            wscale=6,  # our window scale; window= is then in bytes
            window=1 << 20,
            sack=True,
            timestamps=None,  # as the peer's SYN does
        )
        iut = await lab.iut.socket()
        connect_nowait(iut, (str(lab.tst.ip), 20000))
        await conn.wait_open(timeout=5)
        core = conn.core
        print("shifts:", core.snd_wscale, core.rcv_wscale, "SACK:", core.sack_ok, "timestamps:", core.ts_enabled)

        # a hole: the kernel answers with a SACK block for what lies after it
        base = conn.next_seqn
        await conn.send_msg(b"B" * 100, seq=(base + 100) % 2**32)
        # a duplicate ACK of byte 1, bytes 101 to 201 SACKed (relative to our ISN)
        msg = await conn.expect(". 1:1(0) ack 1 <nop,nop,TS val * ecr *,nop,nop,sack 101:201>", within=5)
        print("got", msg)
        print("kernel window", msg.window, "on the wire,", msg.window_bytes, "bytes; TS", msg.timestamps)

        # an old timestamp: PAWS makes the kernel drop the segment
        old = (core.last_tsval_sent - 100_000) % 2**32
        await conn.send_msg(b"A" * 100, seq=base, options=[TcpOption(1), TcpOption(1), TcpOption.timestamps(old, 0)])
        await conn.send_msg(b"A" * 100, seq=base)  # the same bytes with a fresh timestamp
        conn.update_sent_seq(200)
        received = b""
        with trio.fail_after(5):
            while len(received) < 200:
                received += await iut.recv(1000)
        assert received == b"A" * 100 + b"B" * 100
        iut.close()


if __name__ == "__main__":
    trio.run(main)
