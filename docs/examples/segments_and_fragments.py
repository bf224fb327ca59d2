"""Every field of a segment, broken frames, and one segment as IP fragments."""

import trio

import tcpemu
from tcpemu import TcpFlags, malform
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

        # a segment with a broken checksum, then the same one intact
        spec = conn.segment(b"one", ttl=3, tos=0x01, flags=TcpFlags.ACK | TcpFlags.PSH)
        await conn.send_frames([malform.corrupt_tcp_checksum(spec.encode())])
        await conn.send_segments(spec)
        conn.update_sent_seq(3)

        # a stream cut in pieces, sent out of order with a duplicate
        first, second, third = conn.stream_segments(b"two-three-four", cuts=[4, 10])
        await conn.send_segments([third, first, second, first])
        conn.update_sent_seq(14)

        # one segment as three IP fragments, the last one first
        frame = conn.segment(b"F" * 100, df=False, ip_id=99).encode()
        await conn.send_frames(malform.fragment_ipv4(frame, [(64, 120), (0, 32), (32, 64)]))
        conn.update_sent_seq(100)

        received = b""
        with trio.fail_after(5):
            while len(received) < 117:
                received += await iut.recv(1000)
        assert received == b"one" + b"two-three-four" + b"F" * 100
        iut.close()


if __name__ == "__main__":
    trio.run(main)
