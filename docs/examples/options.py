"""Window scale, timestamps and SACK, negotiated with the kernel and honoured."""

import trio

import tcpemu
from tcpemu import TcpOption
from tcpemu.lab import connect_nowait, open_lab
from tcpemu.wire import OptionKind


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
        later = await conn.send_msg(b"B" * 100, seq=(base + 100) % 2**32)
        msg = await conn.recv_msg(timeout=5)
        while not msg.sack_blocks:
            msg = await conn.recv_msg(timeout=5)
        assert msg.sack_blocks == [(later.seq, (later.seq + 100) % 2**32)]
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
        assert msg.option(OptionKind.SACK) is not None
        iut.close()


if __name__ == "__main__":
    trio.run(main)
