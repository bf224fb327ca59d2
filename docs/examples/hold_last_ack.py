"""Hold the IUT in LAST_ACK: we close first, the IUT closes second, its FIN stays unanswered."""

import socket

import trio

import tcpemu
from tcpemu import TcpState, tcp_state, wait_tcp_state
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
        await conn.send_fin(timeout=5)  # IUT: CLOSE_WAIT
        await wait_tcp_state(iut, TcpState.CLOSE_WAIT, timeout=1)
        await conn.expect(". 1:1(0) ack 2", within=1)  # the ACK of our FIN, which send_fin waited for
        iut.shutdown(socket.SHUT_WR)  # IUT: FIN, LAST_ACK
        await conn.expect("F. 1:1(0) ack 2", within=5)  # its FIN, left unanswered
        assert tcp_state(iut) is TcpState.LAST_ACK
        await conn.ack_all()  # IUT: CLOSED
        await wait_tcp_state(iut, TcpState.CLOSED, timeout=1)
        iut.close()


if __name__ == "__main__":
    trio.run(main)
