"""Break and repair the route through a gateway, with an emulated peer behind it.

IUT -- gateway -- emulated tester.  While a direction is broken nothing
crosses it; the IUT retransmits, and after the repair its bytes arrive once
and it recovers.  Then the other direction, with the emulator as the sender
(reliable mode: it retransmits what the IUT does not acknowledge).
"""

import fcntl
import struct
import termios

import trio

import tcpemu
from tcpemu import TcpState, tcp_info, wait_tcp_info, wait_tcp_state
from tcpemu.lab import Direction, connect_nowait, open_lab


def unread(sock: trio.socket.SocketType) -> int:
    """Bytes a socket holds that nobody has read yet (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]


async def main() -> None:
    async with (
        open_lab(gateway=True) as lab,
        tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns, reliable=True) as engine,
    ):
        conn = engine.connection(
            tcpemu.SERVER,
            local=(str(lab.tst.ip), 20000),
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,  # the gateway's neighbour entry for the tester points here
            remote_mac=lab.tst_next_hop_mac,  # the gateway, on the tester's side
        )
        iut = await lab.iut.socket()
        connect_nowait(iut, (str(lab.tst.ip), 20000))
        await conn.wait_open(timeout=5)
        await wait_tcp_state(iut, TcpState.ESTABLISHED, timeout=5)

        # IUT -> tester broken: the gateway forwards to a black-hole MAC.
        await lab.break_path(Direction.IUT_TO_TST)
        await iut.send(b"sent while the route is broken")
        info = await wait_tcp_info(iut, lambda i: i.total_retrans >= 2, timeout=10, what="two retransmits")
        print(f"broken: IUT retransmitted {info.total_retrans} times, {info.unacked} segment unacked")
        assert conn.core.stream_available() == 0  # the emulator got nothing
        await lab.repair_path(Direction.IUT_TO_TST)  # back to the alien MAC, not the tester's kernel
        await conn.wait_until(lambda c: c.core.stream_available() >= 30, timeout=10, what="the data")
        data = conn.core.read_stream()
        await conn.ack_all()
        assert data == b"sent while the route is broken"
        info = await wait_tcp_info(iut, lambda i: i.unacked == 0, timeout=10, what="recovery")
        print(f"repaired: {len(data)} bytes arrived once; IUT {info.state.name}, nothing unacked")

        # tester -> IUT broken: the emulator's segments, its ACKs too, die at the gateway.
        await lab.break_path(Direction.TST_TO_IUT)
        await conn.send_msg(b"from the emulated peer")
        await iut.send(b"reply")  # IUT -> tester still works...
        await conn.wait_until(lambda c: c.core.stream_available() >= 5, timeout=10, what="the reply")
        assert conn.core.read_stream() == b"reply"
        await conn.ack_all()  # ...but this ACK is lost: the IUT retransmits
        before = info.total_retrans
        info = await wait_tcp_info(
            iut, lambda i: i.total_retrans >= before + 2, timeout=10, what="two more retransmits"
        )
        assert unread(iut) == 0  # the IUT got nothing
        await lab.repair_path(Direction.TST_TO_IUT)
        await conn.ack_all()
        with trio.fail_after(10):
            got = await iut.recv(100)  # the emulator's retransmission
        assert got == b"from the emulated peer"
        await conn.wait_until(lambda c: c.core.unacked_bytes() == 0, timeout=10, what="our data acknowledged")
        info = await wait_tcp_info(iut, lambda i: i.unacked == 0, timeout=10, what="recovery")
        retransmits = conn.statistics().retransmits_sent
        print(f"repaired: the IUT read {got!r}, sent {retransmits} times; its reply acknowledged")
        print("trace:", *[line for line in conn.trace() if "lab: path" in line], sep="\n  ")
        assert tcp_info(iut).state is TcpState.ESTABLISHED


if __name__ == "__main__":
    trio.run(main)
