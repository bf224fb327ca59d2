"""Hold the IUT in SYN_SENT: the SYN is seen, and answered only when the test says so."""

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
        # the SYN is here, unanswered; its options as Linux orders them (TS val: any)
        syn = await conn.expect("S 0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale *>", within=5)
        assert tcp_state(iut) is TcpState.SYN_SENT
        # the kernel retransmits its SYN (1 s later on Linux) and is still waiting
        again = await conn.expect("S 0:0(0) <mss 1460,sackOK,TS val * ecr 0,nop,wscale *>", within=5)
        assert again.retransmit and tcp_state(iut) is TcpState.SYN_SENT
        print("got", syn)  # S 0:0(0) win 64240 <mss 1460,sackOK,TS val ... ecr 0,nop,wscale 7>
        print("again after", round(again.time - syn.time, 1), "s")
        await conn.wait_open(timeout=5)  # now we answer
        await wait_tcp_state(iut, TcpState.ESTABLISHED, timeout=1)
        iut.close()


if __name__ == "__main__":
    trio.run(main)
