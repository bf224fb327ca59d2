"""Hold the IUT in FIN_WAIT1 by never acknowledging its FIN, then let it go."""

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
        await wait_tcp_state(iut, TcpState.ESTABLISHED, timeout=1)
        iut.shutdown(socket.SHUT_WR)  # the IUT sends FIN
        fin = await conn.expect("F. 1:1(0) ack 1", within=5)  # read it; expect() answers nothing
        assert conn.fin_got and tcp_state(iut) is TcpState.FIN_WAIT_1
        print("got", fin)
        await conn.ack_all()  # release: FIN_WAIT2
        await wait_tcp_state(iut, TcpState.FIN_WAIT_2, timeout=1)
        iut.close()


if __name__ == "__main__":
    trio.run(main)
