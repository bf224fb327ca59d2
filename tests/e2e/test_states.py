"""The state driver against the kernel: every path of the RFC 9293 diagram a Linux
socket can be driven along, each verified state by state, in each tester mode."""

from __future__ import annotations

import socket

import pytest
import trio

from tcpemu import TcpState, UsageError, tcp_info, wait_tcp_info
from tcpemu.lab import Direction, open_lab
from tcpemu.states import DriverMode, StateTransitionError, open_state_driver, parse_path

from .conftest import recv_exactly

pytestmark = pytest.mark.e2e

EST = "CLOSED -> SYN_SENT -> ESTABLISHED"
ALL = tuple(DriverMode)
EMU = (DriverMode.EMULATED, DriverMode.EMULATED_GATEWAY)

# name: (path, modes that can drive it)
PATHS: dict[str, tuple[str, tuple[DriverMode, ...]]] = {
    "listen-close": ("CLOSED -> LISTEN -close-> CLOSED", ALL),
    "passive-open": ("CLOSED -> LISTEN -> SYN_RECEIVED -> ESTABLISHED", ALL),
    "passive-open-reset": ("CLOSED -> LISTEN -> SYN_RECEIVED -rst-> LISTEN", EMU),
    "active-open": (EST, ALL),
    "syn-sent-close": ("CLOSED -> SYN_SENT -close-> CLOSED", ALL),
    "syn-sent-rst": ("CLOSED -> SYN_SENT -rst-> CLOSED", ALL),
    "syn-sent-timeout": ("CLOSED -> SYN_SENT -timeout-> CLOSED", ALL),
    "simultaneous-open": ("CLOSED -> SYN_SENT -> SYN_RECEIVED -> ESTABLISHED", EMU),
    "simultaneous-open-close": ("CLOSED -> SYN_SENT -> SYN_RECEIVED -> FIN_WAIT_1", EMU),
    "active-close": (f"{EST} -> FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT", ALL),
    "active-close-reset-time-wait": (f"{EST} -> FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT -rst-> CLOSED", EMU),
    "simultaneous-close": (f"{EST} -> FIN_WAIT_1 -> CLOSING -> TIME_WAIT", ALL),
    "fin-with-ack-of-fin": (f"{EST} -> FIN_WAIT_1 -fin-ack-> TIME_WAIT", ALL),
    "passive-close": (f"{EST} -> CLOSE_WAIT -> LAST_ACK -> CLOSED", ALL),
    "established-rst": (f"{EST} -rst-> CLOSED", ALL),
    "established-timeout": (f"{EST} -timeout-> CLOSED", ALL),
    "fin-wait-1-rst": (f"{EST} -> FIN_WAIT_1 -rst-> CLOSED", ALL),
    "fin-wait-1-timeout": (f"{EST} -> FIN_WAIT_1 -timeout-> CLOSED", ALL),
    "fin-wait-2-rst": (f"{EST} -> FIN_WAIT_1 -> FIN_WAIT_2 -rst-> CLOSED", ALL),
    "fin-wait-2-timeout": (f"{EST} -> FIN_WAIT_1 -> FIN_WAIT_2 -timeout-> CLOSED", ALL),
    "closing-rst": (f"{EST} -> FIN_WAIT_1 -> CLOSING -rst-> CLOSED", ALL),
    "closing-timeout": (f"{EST} -> FIN_WAIT_1 -> CLOSING -timeout-> CLOSED", ALL),
    "close-wait-rst": (f"{EST} -> CLOSE_WAIT -rst-> CLOSED", ALL),
    "last-ack-rst": (f"{EST} -> CLOSE_WAIT -> LAST_ACK -rst-> CLOSED", ALL),
    "last-ack-timeout": (f"{EST} -> CLOSE_WAIT -> LAST_ACK -timeout-> CLOSED", ALL),
    "passive-open-then-active-close": (
        "CLOSED -> LISTEN -> SYN_RECEIVED -> ESTABLISHED -> FIN_WAIT_1 -> FIN_WAIT_2 -> TIME_WAIT",
        ALL,
    ),
}

CASES = [
    pytest.param(mode, name, id=f"{mode.value}-{name}")
    for name, (_, modes) in PATHS.items()
    for mode in modes
]


@pytest.mark.parametrize(("mode", "name"), CASES)
async def test_path(mode, name):
    path = PATHS[name][0]
    async with open_state_driver(mode, seed=3) as driver:
        await driver.walk(path)
        steps = parse_path(path)
        assert driver.state is steps[-1][0]
        assert [to for _, to, _ in driver.history] == [s for s, _ in steps[1:]]
        assert (driver.last_from, driver.last_to) == (steps[-2][0], steps[-1][0])


def test_every_state_is_reached_in_every_mode():
    for mode in DriverMode:
        reached = {s for path, modes in PATHS.values() if mode in modes for s, _ in parse_path(path)}
        assert reached == set(TcpState), f"{mode.value} misses {set(TcpState) - reached}"


def test_path_syntax():
    assert parse_path("CLOSED -> SYN_SENT -rst-> CLOSED") == [
        (TcpState.CLOSED, None),
        (TcpState.SYN_SENT, None),
        (TcpState.CLOSED, "rst"),
    ]
    assert parse_path(["CLOSED", TcpState.LISTEN]) == [(TcpState.CLOSED, None), (TcpState.LISTEN, None)]
    with pytest.raises(UsageError, match="unknown TCP state"):
        parse_path("CLOSED -> OPEN")


async def test_illegal_and_impossible_moves_are_refused_clearly():
    async with open_state_driver(DriverMode.KERNEL) as driver:
        with pytest.raises(
            UsageError, match="no legal move CLOSED -> ESTABLISHED; from CLOSED: LISTEN, SYN_SENT"
        ):
            await driver.move_to("ESTABLISHED")
        await driver.move_to("SYN_SENT")
        with pytest.raises(UsageError, match="not possible with a kernel tester: simultaneous open"):
            await driver.move_to("SYN_RECEIVED")
        with pytest.raises(UsageError, match="can go by rst, timeout, close, not 'fin'"):
            await driver.move_to("CLOSED", via="fin")
        with pytest.raises(UsageError, match="path starts at LISTEN"):
            await driver.walk("LISTEN -> CLOSED")
        assert driver.state is TcpState.SYN_SENT


async def test_a_failed_transition_names_it_and_the_state_found():
    """The IUT's peer answers nothing: FIN_WAIT_1 -> FIN_WAIT_2 cannot land."""
    async with open_state_driver(DriverMode.EMULATED, move_timeout=0.5) as driver:
        await driver.walk(f"{EST} -> FIN_WAIT_1")

        async def nothing(how: str) -> None:
            return None

        driver._fin_wait_1__fin_wait_2 = nothing  # the move that never sends the ACK
        with pytest.raises(
            StateTransitionError, match=r"FIN_WAIT_1 -> FIN_WAIT_2 \(ack\) failed.*FIN_WAIT_1"
        ):
            await driver.move_to("FIN_WAIT_2")
        assert driver.state is TcpState.FIN_WAIT_1


async def kernel_pair(lab) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A kernel TCP connection from the IUT to a listener on the tester: (IUT socket, tester socket)."""
    listener = await lab.tst.socket()
    await listener.bind((str(lab.tst.ip), 20000))
    listener.listen(1)
    iut = await lab.iut.socket()
    with trio.fail_after(5):
        await iut.connect((str(lab.tst.ip), 20000))
        tst, _ = await listener.accept()
    listener.close()
    return iut, tst


@pytest.mark.parametrize("gateway", [True, False], ids=["gateway", "two-host"])
async def test_break_and_repair_iut_to_tester(gateway):
    """With IUT->tester broken the IUT retransmits; after repair its data arrives."""
    async with open_lab(gateway=gateway, alien_neighbour=False) as lab:
        iut, tst = await kernel_pair(lab)
        await lab.break_path(Direction.IUT_TO_TST)
        await iut.send(b"held back")
        info = await wait_tcp_info(iut, lambda i: i.total_retrans >= 2, timeout=5, what="two retransmits")
        assert info.unacked == 1 and info.retransmits >= 1
        assert tst.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1
        assert _queued(tst) == 0  # nothing got through
        await lab.repair_path(Direction.IUT_TO_TST)
        assert await recv_exactly(tst, 9, timeout=10) == b"held back"
        await wait_tcp_info(iut, lambda i: i.unacked == 0, timeout=5, what="data acknowledged")


async def test_break_and_repair_tester_to_iut():
    async with open_lab(gateway=True, alien_neighbour=False) as lab:
        iut, tst = await kernel_pair(lab)
        await lab.break_path(Direction.TST_TO_IUT)
        await tst.send(b"to the iut")
        await wait_tcp_info(tst, lambda i: i.total_retrans >= 1, timeout=5, what="a retransmit")
        assert _queued(iut) == 0
        await lab.repair_path(Direction.TST_TO_IUT)
        assert await recv_exactly(iut, 10, timeout=10) == b"to the iut"


def _queued(sock) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


async def test_tcp_info_fields_read_back():
    async with open_state_driver(DriverMode.EMULATED) as driver:
        await driver.walk(EST)
        info = tcp_info(driver.iut_socket)
        assert info.state is TcpState.ESTABLISHED and info.linux_state == 1
        # our MSS option, less the timestamp option both sides now send
        assert info.snd_mss == 1460 - (12 if driver.conn.core.ts_enabled else 0) == 1448
        assert info.rto >= 200_000 and info.snd_cwnd == 10 and info.unacked == 0
        assert info.retransmits == 0 and info.total_retrans == 0 and info.rtt > 0
