"""An engine on a TAP device whose file descriptor a user-space stack owns: PyTCP.

No bridge and no kernel TCP: PyTCP (from PyPI, the ``test`` extra) runs in its
own process in a namespace the test makes, attached to a TAP device there; the
engine opens the TAP's netdev in the same namespace.  Frames PyTCP writes to
its descriptor are what the netdev receives, and what the engine sends on the
netdev is what PyTCP reads.  The namespace has no address and forwards nothing,
so its kernel stays out of the conversation (the link check says so).

The assertions are what must hold of any TCP (the handshake completes, the bytes
arrive exactly, an unacknowledged segment is sent again, both FINs are
acknowledged); what PyTCP chose to do is collected in a report that
``pytest -s`` prints.
"""

from __future__ import annotations

import random

import pytest
import trio

import tcpemu
from tcpemu import TcpFlags, TcpState
from tcpemu.linkcheck import check_link
from tcpemu.wire import OptionKind

from . import _pytcp

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.tcpemu_needs_root(
        "a TUN/TAP device needs /dev/net/tun, which only the host's root may open here"
    ),
]

EMU_IP = "198.18.7.2"  # on PyTCP's /24, owned by nobody: the engine answers ARP for it
EMU_MAC = "02:00:00:77:00:02"
EMU_PORT = 20000


def offered(msg: tcpemu.Message) -> dict[str, object]:
    """The options of a SYN or SYN-ACK by name, with their values."""
    names = {
        OptionKind.MSS: "mss",
        OptionKind.WSCALE: "wscale",
        OptionKind.SACK_PERMITTED: "sack-permitted",
        OptionKind.TIMESTAMP: "timestamps",
    }
    found: dict[str, object] = {}
    for opt in msg.options:
        name = names.get(opt.kind, f"kind {opt.kind}")
        try:
            found[name] = opt.value()
        except Exception:
            found[name] = opt.data.hex()
    return found


def report(title: str, observations: dict[str, object]) -> None:
    width = max(len(k) for k in observations)
    print(f"\n--- {title}")
    for key, value in observations.items():
        print(f"  {key:{width}}  {value}")


async def test_a_tap_without_its_owner_has_no_carrier_and_the_check_says_so():
    rng = random.Random()
    ns = _pytcp.netns_name(rng)
    await trio.to_thread.run_sync(tcpemu.net.create_netns, ns)
    try:
        await trio.to_thread.run_sync(_pytcp.make_tap, ns, "tap0")
        await trio.to_thread.run_sync(tcpemu.net.link_up, ns, "tap0")
        findings = await trio.to_thread.run_sync(check_link, "tap0", ns)
        assert [(f.setting, f.severity) for f in findings if f.severity == "error"] == [
            ("link carrier", "error")
        ]
        assert "TAP" in findings[0].why
    finally:
        await trio.to_thread.run_sync(tcpemu.net.remove_netns, ns)


async def test_engine_on_the_tap_drives_pytcp_through_a_whole_connection():
    rng = random.Random(1)
    seen: dict[str, object] = {}
    async with _pytcp.open_tap_stack(rng=rng) as stack:
        # PyTCP holds the TAP's descriptor now: the link is up and nothing in it gets in the way
        assert await trio.to_thread.run_sync(check_link, stack.tap, stack.netns, [EMU_IP]) == []
        async with tcpemu.open_engine(stack.tap, netns=stack.netns, rng=rng) as engine:
            syn_sent = trio.current_time()
            conn = engine.connection(
                tcpemu.CLIENT,
                local=(EMU_IP, EMU_PORT),
                remote=(stack.ip, stack.port),
                local_mac=EMU_MAC,
                remote_mac=stack.mac,
                mss=1460,
                wscale=7,
                sack=True,
                timestamps=True,
            )
            # -- handshake, with every option offered
            synack = await conn.wait_msg(timeout=10)
            assert synack.flags & (TcpFlags.SYN | TcpFlags.ACK) == TcpFlags.SYN | TcpFlags.ACK
            assert synack.ack == (conn.first_seqn_sent + 1) % 2**32
            await conn.wait_open(timeout=10)
            assert conn.state is TcpState.ESTABLISHED
            await stack.wait_event("accepted")  # PyTCP's accept() returned
            seen["SYN-ACK options (we offered mss, wscale 7, sackOK, TS)"] = offered(synack) or "none"
            seen["SYN-ACK window"] = synack.window
            seen["SYN-ACK delay after our SYN"] = f"{synack.time - syn_sent:.3f} s"

            # -- data to PyTCP, echoed back; PyTCP's first echo segment is not acknowledged
            payload = rng.randbytes(1000)
            await conn.send_msg(payload)
            first = await conn.recv_msg(timeout=10, ack=False)
            while not first.payload:  # its ACK of our data may come first
                first = await conn.recv_msg(timeout=10, ack=False)
            again = await conn.recv_msg(timeout=10, ack=False)
            while not again.payload:
                again = await conn.recv_msg(timeout=10, ack=False)
            # -- the same bytes again: PyTCP's retransmission, seen as one
            assert again.kind is tcpemu.SegmentKind.RETRANSMIT, again
            assert (again.seq, again.payload) == (first.seq, first.payload)
            assert conn.statistics().retransmits_seen >= 1
            seen["retransmission after"] = f"{again.time - first.time:.3f} s (no ACK sent)"
            seen["window while unacknowledged"] = again.window
            await conn.send_ack()
            echoed = first.payload
            while len(echoed) < len(payload):  # PyTCP echoes each recv() as it returns
                echoed += await conn.recv_data(idle=0.3, timeout=10)
            assert echoed == payload
            recv = await stack.wait_event("recv")
            assert recv["total"] == len(payload)  # PyTCP's recv() got exactly what we sent

            # -- more data: several segments in one go, echoed in order
            bulk = rng.randbytes(4000)
            for i in range(0, len(bulk), 1000):
                await conn.send_msg(bulk[i : i + 1000])
            back = await conn.recv_data(idle=0.3, timeout=10)
            while len(back) < len(bulk):
                back += await conn.recv_data(idle=0.3, timeout=10)
            assert back == bulk
            seen["echo segments seen"] = conn.statistics().segments_received

            # -- close: our FIN, PyTCP's recv() returns EOF, its close() sends its FIN
            await conn.send_fin(timeout=10)
            await stack.wait_event("eof")
            while not conn.fin_got:
                await conn.recv_msg(timeout=10)
            await stack.wait_event("closed")
            assert conn.state is TcpState.TIME_WAIT  # its FIN acknowledged by the engine
            seen["retransmits seen in all"] = conn.statistics().retransmits_seen
    report("PyTCP on a TAP, driven by the engine (a client connecting to its echo service)", seen)


async def test_pytcp_connects_to_an_emulated_server_and_its_syn_is_seen():
    rng = random.Random(2)
    seen: dict[str, object] = {}
    async with (
        _pytcp.open_tap_stack(rng=rng) as stack,
        tcpemu.open_engine(stack.tap, netns=stack.netns, rng=rng) as engine,
    ):
        conn = engine.connection(
            tcpemu.SERVER,
            local=(EMU_IP, EMU_PORT),
            remote=(stack.ip, None),
            local_mac=EMU_MAC,
            remote_mac=None,  # learnt from PyTCP's SYN
            wscale=7,
            sack=True,
        )
        await stack.command(f"connect {EMU_IP} {EMU_PORT}")
        syn = await conn.wait_msg(timeout=10)
        assert syn.flags & TcpFlags.SYN and not syn.flags & TcpFlags.ACK
        seen["SYN options"] = offered(syn) or "none"
        seen["SYN window"] = syn.window
        await conn.wait_open(timeout=10)
        await stack.wait_event("connected")
        await conn.send_msg(b"hello from the emulated server")
        assert await conn.recv_data(idle=0.3, timeout=10) == b"hello from the emulated server"
        await conn.send_fin(timeout=10)
        while not conn.fin_got:
            await conn.recv_msg(timeout=10)
        await stack.wait_event("closed")
        assert conn.state is TcpState.TIME_WAIT
    report("PyTCP on a TAP, connecting to an emulated server", seen)


async def test_pytcp_and_a_window_smaller_than_its_data():
    """We offer window scaling, PyTCP's SYN-ACK does not, so no scaling is in effect (RFC 7323
    2.2): our window of 500 bytes allows 500 bytes.  The report says how much PyTCP sent
    before our ACK; the test asserts that what arrived is exactly what we sent, in order."""
    rng = random.Random(3)
    seen: dict[str, object] = {}
    async with (
        _pytcp.open_tap_stack(rng=rng) as stack,
        tcpemu.open_engine(stack.tap, netns=stack.netns, rng=rng) as engine,
    ):
        conn = engine.connection(
            tcpemu.CLIENT,
            local=(EMU_IP, EMU_PORT),
            remote=(stack.ip, stack.port),
            local_mac=EMU_MAC,
            remote_mac=stack.mac,
            wscale=7,
        )
        synack = await conn.wait_msg(timeout=10)
        await conn.wait_open(timeout=10)
        assert synack.option(OptionKind.WSCALE) is None and conn.core.snd_wscale == 0
        conn.window = 500
        payload = rng.randbytes(3000)
        for i in range(0, len(payload), 1000):
            await conn.send_msg(payload[i : i + 1000])  # each carries our window of 500
        got = b""
        beyond = 0
        with trio.move_on_after(1.5):  # PyTCP's retransmission timer is 1 s: past it, all it will send
            while True:
                msg = await conn.recv_msg(timeout=None, ack=False)
                if msg.kind is tcpemu.SegmentKind.EXPECTED and msg.payload:
                    got += msg.payload
                    beyond = max(beyond, len(got) - 500)
        seen["window we advertised (no scaling agreed)"] = "500 bytes"
        seen["sent before our ACK"] = f"{len(got)} bytes ({beyond} beyond our window)"
        conn.window = 65535
        await conn.send_ack()
        while len(got) < len(payload):
            got += await conn.recv_data(idle=0.3, timeout=10)
        assert got == payload  # whatever the window did, the stream is exact
        await conn.send_rst()
    report("PyTCP and a window smaller than its data", seen)
