"""Tests with the tcpemu pytest plugin: the lab, the engine, the connection factory and the
marker.  Run it as a program (it runs pytest on itself), or put such tests in your suite
with trio_mode = true."""

import sys

import pytest

import tcpemu
from tcpemu.lab import connect_nowait


async def test_the_iut_connects_and_reads(tcpemu_lab, tcpemu_connection):
    conn = tcpemu_connection()  # SERVER on the tester's port 20000; addresses and MACs from the lab
    iut = await tcpemu_lab.iut.socket()
    connect_nowait(iut, (str(tcpemu_lab.tst.ip), 20000))
    await conn.wait_open(timeout=5)
    await conn.send_msg(b"hello")
    assert await iut.recv(5) == b"hello"


@pytest.mark.tcpemu(faults_out="drop=1.0", capture=False)
async def test_a_lost_syn_ack_holds_the_iut_in_syn_sent(tcpemu_lab, tcpemu_engine, tcpemu_connection):
    conn = tcpemu_connection()
    iut = await tcpemu_lab.iut.socket()
    connect_nowait(iut, (str(tcpemu_lab.tst.ip), 20000))
    with pytest.raises(tcpemu.TcpemuTimeoutError):
        await conn.wait_open(timeout=0.5)  # our SYN-ACK is sent, and dropped
    assert tcpemu_engine.statistics().faults["out-drop"] >= 1
    assert tcpemu.tcp_state(iut) is tcpemu.TcpState.SYN_SENT


if __name__ == "__main__":
    # (-W: this file imported tcpemu before pytest could rewrite its asserts)
    args = [
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "trio_mode=true",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
    ]
    sys.exit(pytest.main([__file__, *args]))
