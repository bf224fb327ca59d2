"""An engine on links the lab did not make: towards a remote host's kernel, then on a bridge.

A veth stands in for the NIC: its far end is in a namespace playing the remote
host (its kernel is the IUT, with no neighbour entry set up for us).  The
tester's namespace has no address at all; the link check says what to fix.
Run as root.
"""

import os

import trio
from pyroute2 import NetNS

import tcpemu
from tcpemu import net
from tcpemu.lab import Host, connect_nowait
from tcpemu.linkcheck import check_link

TAG = f"tcpemu-{os.getpid()}-ownlink"  # the lab's pattern: `tcpemu cleanup` knows these
REMOTE, TESTER = f"{TAG}-iut", f"{TAG}-tst"
REMOTE_IP, EMU_IP = "198.18.9.1", "198.18.9.2"
EMU_MAC = "02:00:00:09:00:02"  # no interface has it


async def check(ifname: str) -> list[str]:
    findings = await trio.to_thread.run_sync(check_link, ifname, TESTER, [EMU_IP])
    for finding in findings:
        print(f"  {ifname}: {finding.severity} {finding.setting} = {finding.value}")
    return [f.setting for f in findings]


async def talk(ifname: str, port: int) -> None:
    """The remote kernel connects to the emulated address; it finds our MAC with ARP."""
    async with tcpemu.open_engine(ifname, netns=TESTER) as engine:
        conn = engine.connection(
            tcpemu.SERVER, local=(EMU_IP, port), remote=(REMOTE_IP, None), local_mac=EMU_MAC, remote_mac=None
        )
        sock = await Host("iut", REMOTE, "eth0", net.parse_ip(REMOTE_IP), 24, "").socket()  # a socket there
        connect_nowait(sock, (EMU_IP, port))
        await conn.wait_open(timeout=5)  # the engine answered the remote's ARP for EMU_IP
        await conn.send_msg(b"over " + ifname.encode())
        with trio.fail_after(5):
            print("  the remote kernel got", await sock.recv(100))
        await conn.send_rst()
        sock.close()


def build() -> None:
    for ns in (REMOTE, TESTER):
        net.create_netns(ns)
    net.create_veth(REMOTE, "eth0", TESTER, "nic0")
    net.add_address(REMOTE, "eth0", net.parse_ip(REMOTE_IP), 24)
    for ns, ifname in ((REMOTE, "eth0"), (TESTER, "nic0")):
        net.link_up(ns, ifname)


async def main() -> None:
    try:
        await trio.to_thread.run_sync(build)
        print("a NIC towards a remote host (offloads as the driver left them):")
        assert "ethtool tx/tso/gso" in await check("nic0")
        await trio.to_thread.run_sync(lambda: net.set_offloads(TESTER, "nic0", on=False))
        assert await check("nic0") == []  # nothing left to fix
        await talk("nic0", 20000)

        print("the same NIC as a port of a bridge, the engine on the bridge device:")
        with NetNS(TESTER) as ns:
            ns.link("add", ifname="br0", kind="bridge")
            ns.link("set", index=ns.link_lookup(ifname="nic0")[0], master=ns.link_lookup(ifname="br0")[0])
            ns.link("set", index=ns.link_lookup(ifname="br0")[0], state="up")
        assert "promiscuity" in await check("br0")  # the bridge keeps frames to EMU_MAC for its ports
        with NetNS(TESTER) as ns:
            ns.link("set", index=ns.link_lookup(ifname="br0")[0], flags=0x100, change=0x100)  # IFF_PROMISC
        assert "promiscuity" not in await check("br0")
        await talk("br0", 20001)
    finally:
        for ns in (REMOTE, TESTER):
            if ns in net.list_netns():
                await trio.to_thread.run_sync(net.remove_netns, ns)


if __name__ == "__main__":
    trio.run(main)
