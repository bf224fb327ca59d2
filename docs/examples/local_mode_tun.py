"""packetdrill's local mode: the engine owns a TUN device, the namespace's own kernel is the IUT."""

import ipaddress
import os
import socket

import trio

import tcpemu
from tcpemu import net
from tcpemu._netns import run_in_netns
from tcpemu.lab import connect_nowait

IUT, EMULATED = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")


async def main() -> None:
    ns = f"tcpemu-{os.getpid()}-doc-local"  # named as labs are: `tcpemu cleanup` finds a leftover
    await trio.to_thread.run_sync(net.create_netns, ns)
    try:
        async with tcpemu.open_engine("tun0", netns=ns, attach="tun") as engine:
            await trio.to_thread.run_sync(net.add_address, ns, "tun0", IUT, 24)
            await trio.to_thread.run_sync(net.link_up, ns, "tun0")
            conn = engine.connection(tcpemu.SERVER, local=(str(EMULATED), 20000), remote=(str(IUT), None))
            raw = await trio.to_thread.run_sync(run_in_netns, ns, socket.socket)
            iut = trio.socket.from_stdlib_socket(raw)
            connect_nowait(iut, (str(EMULATED), 20000))
            await conn.expect("S 0:0(0) <...>", within=5)  # the kernel's SYN, held until we answer
            await conn.wait_open(timeout=5)
            await conn.send_msg(b"hello from the emulator")
            print(await iut.recv(100))
            iut.close()
    finally:
        await trio.to_thread.run_sync(net.remove_netns, ns)


trio.run(main)
