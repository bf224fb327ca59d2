"""lab.break_path / repair_path with an emulated tester (issue 18).

Each of the four cases (two-host or gateway lab, IUT->tester or
tester->IUT) runs against the kernel with a tcpemu engine as the tester.
What crosses the lab's links is watched by packet captures on the IUT's
and on the tester's interface, next to the engine's own view and the
IUT's TCP_INFO:

- while a direction is broken nothing sent that way reaches its receiver:
  the receiver's stream (or socket) stays empty, and the captures show the
  frames on the wire addressed to the black hole (or, where the emulator
  sends straight to the IUT, cut before the wire);
- after the repair the bytes arrive in order exactly once, and TCP_INFO
  shows the IUT's retransmissions and its recovery;
- at no point does the tester's kernel get a frame (none is addressed to
  its MAC) or reset the connection (no RST reaches the IUT).
"""

from __future__ import annotations

import fcntl
import struct
import termios
from collections.abc import Callable

import pytest
import trio

import tcpemu
from tcpemu import TcpFlags, TcpState, tcp_info, wait_tcp_info, wait_tcp_state
from tcpemu._bpf import tcp_to_addresses
from tcpemu._io import PacketLink
from tcpemu.lab import Direction, Host, Lab, connect_nowait, open_lab
from tcpemu.wire import Frame, IPAddress, parse_frame_untrusted, parse_mac

from .helpers import EMU_PORT, family, recv_exactly, send_all

pytestmark = pytest.mark.e2e

LAB = pytest.mark.parametrize("gateway", [False, True], ids=["two-host", "gateway"])
BOUND = 10.0  # seconds: a bound on each wait, never a clock

# Two full segments and a short one (MSS 1448 or 1428): a stream whose order can be checked.
STREAM_TO_TST = bytes(i % 251 for i in range(4000))
STREAM_TO_IUT = bytes((7 * i) % 253 for i in range(4000))
FROM_IUT = b"the IUT's data, acknowledged only once the path back works" * 4


class Capture:
    """Every TCP frame to ``addr`` that arrives on a host's lab interface."""

    def __init__(self, link: PacketLink) -> None:
        self.link = link
        self.frames: list[Frame] = []
        self._changed = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.lowlevel.wait_readable(self.link.fileno())
            for raw in self.link.recv_batch(64):
                self.frames.append(parse_frame_untrusted(raw))
            self._changed.set()
            self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[Frame], bool], what: str) -> Frame:
        """The first frame captured so far or later that satisfies ``predicate``."""
        with trio.fail_after(BOUND):
            while True:
                for frame in self.frames:
                    if predicate(frame):
                        return frame
                await self._changed.wait()
        raise AssertionError(f"no frame {what}")  # unreachable: fail_after raises

    def carrying_data(self) -> list[Frame]:
        return [f for f in self.frames if f.segment.payload]


async def capture(nursery: trio.Nursery, host: Host, addr: IPAddress, links: list[PacketLink]) -> Capture:
    link = await trio.to_thread.run_sync(PacketLink, host.ifname, host.netns)
    links.append(link)  # closed by the caller
    link.set_filter(tcp_to_addresses([addr]))  # TCP frames to addr arriving here (never outgoing)
    cap = Capture(link)
    await nursery.start(cap.run)
    return cap


def queued(sock: trio.socket.SocketType) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


async def read_stream(conn: tcpemu.Connection, n: int) -> bytes:
    """The emulator reads the IUT's in-order stream until it holds at least ``n`` bytes,
    acknowledging as a receiver does; returns everything it read (more than ``n``
    would mean bytes delivered twice)."""
    got = bytearray()
    with trio.move_on_after(BOUND):
        while len(got) < n:
            await conn.wait_until(lambda c: c.core.stream_available() > 0, what="stream data")
            got += conn.core.read_stream()
            await conn.ack_all()
        return bytes(got)
    raise AssertionError(f"the emulator got {len(got)} of {n} bytes within {BOUND} s")


class Setup:
    """A lab, an engine as the tester with one connection to a kernel socket on the IUT, and the captures."""

    def __init__(self, lab: Lab, engine: tcpemu.Engine, ipv: int) -> None:
        self.lab = lab
        self.engine = engine
        self.ipv = ipv
        self.links: list[PacketLink] = []
        self.conn: tcpemu.Connection
        self.iut: trio.socket.SocketType
        self.at_iut: Capture  # TCP frames to the IUT arriving on its interface
        self.at_tst: Capture  # TCP frames to the tester arriving on the tester's interface

    async def start(self, nursery: trio.Nursery) -> None:
        lab, ipv = self.lab, self.ipv
        self.at_iut = await capture(nursery, lab.iut, lab.iut.address(ipv), self.links)
        self.at_tst = await capture(nursery, lab.tst, lab.tst.address(ipv), self.links)
        self.conn = self.engine.connection(
            tcpemu.SERVER,
            local=(str(lab.tst.address(ipv)), EMU_PORT),
            remote=(str(lab.iut.address(ipv)), None),
            local_mac=lab.alien_mac,
            remote_mac=lab.tst_next_hop_mac,
            reliable=True,
        )
        self.iut = await lab.iut.socket(family(ipv))
        connect_nowait(self.iut, (str(lab.tst.address(ipv)), EMU_PORT))
        await self.conn.wait_open(timeout=BOUND)
        await wait_tcp_state(self.iut, TcpState.ESTABLISHED, timeout=BOUND)

    def check_tester_kernel_never_involved(self) -> None:
        """No frame ever went to the tester interface's own MAC (its kernel saw nothing),
        and no RST reached the IUT (nobody reset the connection)."""
        tst_mac = parse_mac(self.lab.tst.mac)
        assert [f for f in self.at_tst.frames if f.dst_mac == tst_mac] == []
        assert [f for f in self.at_iut.frames if f.segment.flags & TcpFlags.RST] == []
        assert tcp_info(self.iut).state is TcpState.ESTABLISHED


@pytest.fixture
async def emulated(request: pytest.FixtureRequest, ipv: int):
    gateway: bool = request.node.callspec.params["gateway"]
    async with (
        open_lab(gateway=gateway) as lab,
        tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, reliable=True, rto=0.2) as engine,
        trio.open_nursery() as nursery,
    ):
        setup = Setup(lab, engine, ipv)
        try:
            await setup.start(nursery)
            yield setup
        finally:
            nursery.cancel_scope.cancel()
            for link in setup.links:
                link.close()


@LAB
async def test_iut_to_tester_broken_then_repaired(gateway: bool, emulated: Setup) -> None:
    s = emulated
    lab, conn, iut = s.lab, s.conn, s.iut
    blackhole = parse_mac(lab.blackhole_mac)
    received_before = conn.statistics().segments_received

    await lab.break_path(Direction.IUT_TO_TST)
    await send_all(iut, STREAM_TO_TST)
    info = await wait_tcp_info(iut, lambda i: i.total_retrans >= 2, timeout=BOUND, what="two retransmits")
    assert info.unacked >= 1
    # The IUT's segments were on the tester's link, addressed to the black hole...
    await s.at_tst.wait_for(lambda f: bool(f.segment.payload) and f.dst_mac == blackhole, "to the black hole")
    assert {f.dst_mac for f in s.at_tst.carrying_data()} == {blackhole}
    # ...and the emulator took none of them.
    assert conn.statistics().segments_received == received_before
    assert conn.core.stream_available() == 0
    assert tcp_info(iut).unacked >= 1  # still nothing acknowledged
    assert any(f"path {Direction.IUT_TO_TST.value} broken" in line for line in conn.trace())

    await lab.repair_path(Direction.IUT_TO_TST)
    got = await read_stream(conn, len(STREAM_TO_TST))
    assert got == STREAM_TO_TST  # in order, exactly once
    info = await wait_tcp_info(iut, lambda i: i.unacked == 0, timeout=BOUND, what="everything acknowledged")
    assert info.total_retrans > 0 and info.state is TcpState.ESTABLISHED
    assert conn.core.stream_available() == 0
    alien = parse_mac(lab.alien_mac)
    await s.at_tst.wait_for(lambda f: bool(f.segment.payload) and f.dst_mac == alien, "to the emulator")
    # The pump takes frames in order: every black-holed one came before the
    # repaired path's, and each was counted as for another host, not taken.
    black_holed = [f for f in s.at_tst.carrying_data() if f.dst_mac == blackhole]
    assert len(black_holed) >= 2
    assert s.engine.statistics().frames_other_host >= len(black_holed)
    assert any(f"path {Direction.IUT_TO_TST.value} repaired" in line for line in conn.trace())
    s.check_tester_kernel_never_involved()


@LAB
async def test_tester_to_iut_broken_then_repaired(gateway: bool, emulated: Setup) -> None:
    s = emulated
    lab, conn, iut = s.lab, s.conn, s.iut
    blackhole, iut_mac = parse_mac(lab.blackhole_mac), parse_mac(lab.iut.mac)

    await lab.break_path(Direction.TST_TO_IUT)
    await conn.send_data(STREAM_TO_IUT, timeout=BOUND)
    await send_all(iut, FROM_IUT)
    # IUT -> tester still works: the emulator gets the IUT's data and ACKs it,
    # but the ACKs are lost, so the IUT retransmits.
    assert await read_stream(conn, len(FROM_IUT)) == FROM_IUT
    info = await wait_tcp_info(iut, lambda i: i.total_retrans >= 2, timeout=BOUND, what="two retransmits")
    assert info.unacked >= 1
    await conn.wait_until(lambda c: c.statistics().retransmits_sent >= 1, timeout=BOUND, what="a retransmit")
    if gateway:
        # The gateway forwards the emulator's segments to the black hole.
        await s.at_iut.wait_for(lambda f: bool(f.segment.payload) and f.dst_mac == blackhole, "black-holed")
    else:
        # The emulator sends straight to the IUT's MAC: its engine drops those frames.
        assert s.engine.statistics().frames_cut >= 2
        assert any("path cut" in line for line in conn.trace())
    assert [f for f in s.at_iut.carrying_data() if f.dst_mac == iut_mac] == []
    assert queued(iut) == 0  # the IUT's socket got none of it
    assert tcp_info(iut).unacked >= 1

    await lab.repair_path(Direction.TST_TO_IUT)
    await conn.ack_all()  # what the emulator holds of the IUT's data, now over a working path
    assert await recv_exactly(iut, len(STREAM_TO_IUT), timeout=BOUND) == STREAM_TO_IUT
    await conn.wait_until(lambda c: c.core.unacked_bytes() == 0, timeout=BOUND, what="our data acknowledged")
    info = await wait_tcp_info(iut, lambda i: i.unacked == 0, timeout=BOUND, what="its data acknowledged")
    assert info.total_retrans > 0 and info.state is TcpState.ESTABLISHED
    assert queued(iut) == 0  # nothing more than the stream, once
    assert conn.statistics().retransmits_sent >= 1
    assert any(f"path {Direction.TST_TO_IUT.value} repaired" in line for line in conn.trace())
    s.check_tester_kernel_never_involved()
