"""A lab and an engine as an ordinary user: a user namespace the library makes.

Run it as any user (``python3 rootless.py``); where the kernel forbids user
namespaces it says which setting does.
"""

from tcpemu import rootless

rootless.enter()  # first: before anything starts a thread

import trio  # noqa: E402

import tcpemu  # noqa: E402
from tcpemu.lab import connect_nowait, open_lab  # noqa: E402


async def main() -> None:
    async with open_lab() as lab:
        async with tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
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
            await conn.send_msg(b"no root needed")
            print(await iut.recv(100))


trio.run(main)
