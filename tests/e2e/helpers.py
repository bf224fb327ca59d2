"""Helpers of the end-to-end tests: the Linux kernel in test-made namespaces is the IUT."""

from __future__ import annotations

import errno
import socket

import trio

import tcpemu
from tcpemu.lab import Lab, connect_nowait, recv_exactly

EMU_PORT = 20000
IUT_PORT = 30000

__all__ = ["recv_exactly"]  # the lab's: re-exported for the tests that take it from here


def family(ipv: int) -> int:
    return socket.AF_INET6 if ipv == 6 else socket.AF_INET


def emu_server(
    engine: tcpemu.Engine, lab: Lab, port: int = EMU_PORT, ipv: int = 4, **kw
) -> tcpemu.Connection:
    return engine.connection(
        tcpemu.SERVER,
        local=(str(lab.tst.address(ipv)), port),
        remote=(str(lab.iut.address(ipv)), None),
        local_mac=lab.alien_mac,
        remote_mac=lab.iut.mac,
        **kw,
    )


def emu_client(
    engine: tcpemu.Engine, lab: Lab, port: int = IUT_PORT, local_port: int = EMU_PORT, ipv: int = 4
) -> tcpemu.Connection:
    return engine.connection(
        tcpemu.CLIENT,
        local=(str(lab.tst.address(ipv)), local_port),
        remote=(str(lab.iut.address(ipv)), port),
        local_mac=lab.alien_mac,
        remote_mac=lab.iut.mac,
    )


async def iut_connect(lab: Lab, port: int = EMU_PORT, ipv: int = 4) -> trio.socket.SocketType:
    """An IUT socket with a non-blocking connect() to the emulator in flight."""
    sock = await lab.iut.socket(family(ipv))
    rc = connect_nowait(sock, (str(lab.tst.address(ipv)), port))
    assert rc == errno.EINPROGRESS, f"connect() returned {errno.errorcode.get(rc, rc)}, expected EINPROGRESS"
    return sock


async def connect_result(sock: trio.socket.SocketType, timeout: float = 5) -> int:
    """Wait until the in-flight connect() finishes; returns SO_ERROR (0 = success)."""
    with trio.fail_after(timeout):
        await trio.lowlevel.wait_writable(sock)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


async def open_emulated_server(engine: tcpemu.Engine, lab: Lab, port: int = EMU_PORT, ipv: int = 4):
    conn = emu_server(engine, lab, port, ipv=ipv)
    iut = await iut_connect(lab, port, ipv=ipv)
    await conn.wait_open(timeout=5)
    assert await connect_result(iut) == 0
    return conn, iut


async def iut_listener(lab: Lab, port: int = IUT_PORT, ipv: int = 4) -> trio.socket.SocketType:
    sock = await lab.iut.socket(family(ipv))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    await sock.bind((str(lab.iut.address(ipv)), port))
    sock.listen(16)
    return sock


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = await sock.send(view)
        view = view[n:]
