"""Capture to pcapng, read a connection's trace, and cut its frames out of the capture."""

import pathlib
import tempfile

import trio

import tcpemu
from tcpemu.capture import filter_pcapng, read_pcapng
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    out = pathlib.Path(tempfile.mkdtemp())
    async with open_lab() as lab:
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, capture=out / "all.pcapng") as engine:
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
            await iut.send(b"hello")
            assert await conn.recv_data(idle=0.2, timeout=5) == b"hello"
            print("\n".join(conn.trace()))  # one line per segment and event
            local, remote = conn.local, conn.remote
            iut.close()
    n = filter_pcapng(out / "all.pcapng", out / "one.pcapng", local=local, remote=remote)
    assert n == len(list(read_pcapng(out / "one.pcapng"))) >= 5  # SYN, SYN-ACK, ACK, data, ACK
    print(f"{n} frames of this connection in {out / 'one.pcapng'} (open it in Wireshark)")


if __name__ == "__main__":
    trio.run(main)
