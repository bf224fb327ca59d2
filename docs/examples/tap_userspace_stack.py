"""A user-space TCP/IP stack on a TAP device (PyTCP, from PyPI), driven by an engine.

No bridge: the engine opens the TAP's netdev, PyTCP holds its file descriptor.
Run as root; needs `pip install PyTCP` (it is in tcpemu's `test` extra).
"""

import ctypes
import os
import subprocess
import sys

import trio
from pyroute2 import NetNS

import tcpemu
from tcpemu import net
from tcpemu.linkcheck import check_link

TAP = "tap0"
STACK_IP, STACK_MAC = "198.18.7.1", "02:00:00:77:00:01"  # PyTCP's
EMU_IP, EMU_MAC = "198.18.7.2", "02:00:00:77:00:02"  # the engine's: no host owns them


def serve(netns: str) -> None:
    """The stack's own process: PyTCP on the TAP, echoing what a client sends to port 7."""
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)  # enter the namespace first,
    ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000)  # while this process has one thread
    import pytcp
    from pytcp import config
    from pytcp.lib import socket

    config.LOG_CHANEL = set()  # PyTCP logs every frame otherwise
    stack = pytcp.TcpIpStack(interface=TAP, mac_address=STACK_MAC, ip4_address=f"{STACK_IP}/24")
    config.IP6_SUPPORT = False
    stack.start()  # opens /dev/net/tun, attaches to the TAP, probes its address with ARP
    listener = socket.socket(family=socket.AF_INET4, type=socket.SOCK_STREAM)
    listener.bind((STACK_IP, 7))
    listener.listen()
    print("ready", flush=True)
    conn, _ = listener.accept()
    while data := conn.recv():
        conn.send(data)
    conn.close()
    sys.stdin.read()  # until the example closes our stdin
    os._exit(0)


def make_tap() -> None:
    """A persistent TAP in the namespace, so that it is up before PyTCP attaches to it."""
    with NetNS(NETNS) as ns:
        ns.link("add", ifname=TAP, kind="tuntap", mode="tap")


async def main() -> None:
    await trio.to_thread.run_sync(net.create_netns, NETNS)
    try:
        await trio.to_thread.run_sync(make_tap)
        await trio.to_thread.run_sync(net.link_up, NETNS, TAP)
        for finding in await trio.to_thread.run_sync(check_link, TAP, NETNS):
            print(finding)  # link carrier = off: no process holds the TAP yet (and gro, gso on)
        stack = await trio.lowlevel.open_process(
            [sys.executable, __file__, "--serve", NETNS], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        try:
            said = b""
            with trio.fail_after(30):  # PyTCP probes its address with ARP first: seconds
                while b"ready\n" not in said:
                    chunk = await stack.stdout.receive_some()
                    assert chunk, f"the stack's process ended: {said!r}"
                    said += chunk
            async with tcpemu.open_engine(TAP, netns=NETNS) as engine:
                conn = engine.connection(
                    tcpemu.CLIENT,
                    local=(EMU_IP, 20000),
                    remote=(STACK_IP, 7),
                    local_mac=EMU_MAC,
                    remote_mac=STACK_MAC,
                    wscale=7,
                    sack=True,
                )
                synack = await conn.wait_msg(timeout=10)
                print("PyTCP's SYN-ACK options:", synack.options)  # an MSS only
                await conn.wait_open(timeout=10)
                await conn.send_msg(b"hello, user-space stack")
                echo = await conn.recv_msg(timeout=10, ack=False)  # withhold our ACK...
                while not echo.payload:
                    echo = await conn.recv_msg(timeout=10, ack=False)
                again = await conn.recv_msg(timeout=10, ack=False)  # ...and PyTCP sends it again
                while not again.payload:
                    again = await conn.recv_msg(timeout=10, ack=False)
                print(again.kind, f"after {again.time - echo.time:.2f} s:", again.payload)
                assert again.kind is tcpemu.SegmentKind.RETRANSMIT and again.payload == echo.payload
                await conn.send_ack()
                await conn.send_fin(timeout=10)  # PyTCP's recv() returns b"", it closes too
                while not conn.fin_got:
                    await conn.recv_msg(timeout=10)
                print(conn.state)  # TIME_WAIT
        finally:
            await stack.stdin.aclose()  # the stack's process leaves
            with trio.move_on_after(5):
                await stack.wait()
            if stack.returncode is None:
                stack.kill()
    finally:
        await trio.to_thread.run_sync(net.remove_netns, NETNS)


NETNS = f"tcpemu-{os.getpid()}-tapexample-tst"  # the lab's pattern: `tcpemu cleanup` knows it

if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        trio.run(main)
