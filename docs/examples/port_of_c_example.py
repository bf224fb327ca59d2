"""The old C API's example, line by line (see the tutorial for the C side)."""

import trio

import tcpemu
from tcpemu.lab import connect_nowait, open_lab


async def main() -> None:
    async with open_lab() as lab, tcpemu.open_engine(lab.tst.ifname, netns=lab.tst.netns) as engine:
        # tapi_tcp_init_connection(..., TAPI_TCP_SERVER, tst_addr, iut_addr, ..., alien_mac, iut_mac, 0, &handler)
        conn = engine.connection(
            tcpemu.SERVER,
            local=(str(lab.tst.ip), 20000),
            remote=(str(lab.iut.ip), None),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
        )
        # rpc_connect(pco_iut, iut_s, tst_addr) on a non-blocking socket
        iut_s = await lab.iut.socket()
        connect_nowait(iut_s, (str(lab.tst.ip), 20000))
        # tapi_tcp_wait_open(handler, 3000)
        await conn.wait_open(timeout=3)
        # tapi_tcp_send_msg(handler, buf, 1024, TAPI_TCP_AUTO, 0, TAPI_TCP_AUTO, 0, NULL, 0)
        buf = bytes(range(256)) * 4
        await conn.send_msg(buf)
        # rpc_recv(pco_iut, iut_s, rx_buf, 1024, 0)
        rx = b""
        with trio.fail_after(3):
            while len(rx) < len(buf):
                rx += await iut_s.recv(1024)
        assert rx == buf
        # tapi_tcp_destroy_connection(handler): sends nothing
        await conn.aclose()
        iut_s.close()


if __name__ == "__main__":
    trio.run(main)
