"""The lab itself: isolation, offloads, checksums the kernel sends, cleanup."""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys

import pytest
import trio

from tcpemu import lab as lab_module
from tcpemu import net
from tcpemu._bpf import tcp_to_addresses
from tcpemu._errors import LabError, UsageError
from tcpemu._io import PacketLink
from tcpemu._netns import netns_path
from tcpemu.core import TcpState
from tcpemu.lab import Direction, cleanup_stale_labs, connect_nowait, open_lab
from tcpemu.tcpinfo import wait_tcp_info
from tcpemu.wire import TcpFlags, ipv4_header_checksum_ok, parse_frame_untrusted, tcp_checksum_ok

pytestmark = pytest.mark.e2e


def host_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


async def test_lab_is_removed_when_the_body_raises():
    before_links = host_links()
    with pytest.raises(RuntimeError, match="test body failed"):
        async with open_lab() as lab:
            names = lab.namespaces
            assert set(names) <= set(net.list_netns())
            assert (str(lab.tst.ip), lab.alien_mac, 128) in await lab.neighbours(lab.iut)
            raise RuntimeError("test body failed")
    assert not set(names) & set(net.list_netns())
    assert host_links() == before_links  # nothing was created in the host namespace


async def test_neighbour_entries_are_deleted():
    async with open_lab(alien_neighbour=False) as lab:
        await lab.set_neighbour(lab.iut, "198.18.0.77", "02:00:00:00:00:77")
        assert ("198.18.0.77", "02:00:00:00:00:77", 128) in await lab.neighbours(lab.iut)
        await lab.delete_neighbour(lab.iut, "198.18.0.77")
        assert all(ip != "198.18.0.77" for ip, _, _ in await lab.neighbours(lab.iut))


def namespace_of_a_dead_process(tag: str, holds: list[int] | None = None) -> str:
    """A lab namespace named after a process that is alive while the namespace
    is made and dead afterwards: a parallel worker's lab removes any dead
    process's namespace, and must not do so half-way through its creation.
    With ``holds``, a lab's shared flock on it is taken (and appended) while
    the process still lives, so that no other process's cleanup takes it."""
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    name = f"tcpemu-{child.pid}-{tag}-iut"
    try:
        net.create_netns(name)
        if holds is not None:
            holds.append(lab_module._hold(name))
    finally:
        child.communicate(timeout=30)  # closes its stdin: it exits and is reaped
    return name


async def test_stale_labs_of_dead_processes_are_removed():
    stale = namespace_of_a_dead_process("zz1")
    mine = f"tcpemu-{os.getpid()}-zz2-iut"  # a live process's lab is left alone
    net.create_netns(mine)
    try:
        async with open_lab():
            names = net.list_netns()
            assert stale not in names
            assert mine in names
    finally:
        net.remove_netns(mine)
        if stale in net.list_netns():
            net.remove_netns(stale)


def test_a_held_lab_namespace_is_not_stale_even_when_its_pid_looks_dead():
    # A lab made in another PID namespace: its pid means nothing here, but it
    # holds its flock on the namespace file as every open lab does.
    holds: list[int] = []
    name = namespace_of_a_dead_process("zz6", holds)
    try:
        assert name not in cleanup_stale_labs()
        assert name in net.list_netns()
    finally:
        lab_module._release(holds)
    assert holds == []
    # released, it is stale: our cleanup removes it (or another process's, first)
    assert name in cleanup_stale_labs() or name not in net.list_netns()
    assert name not in net.list_netns()


async def test_an_open_lab_holds_its_namespaces():
    async with open_lab(gateway=True) as lab:
        names = lab.namespaces
        assert len(names) == 3
        for name in names:
            assert lab_module._claim_stale(name) is None  # a cleanup elsewhere could not take it
    assert not set(names) & set(net.list_netns())
    assert lab._holds == []


def test_an_existing_namespace_name_is_an_error_and_is_left_alone():
    name = f"tcpemu-{os.getpid()}-zz3-iut"
    net.create_netns(name)
    try:
        with pytest.raises(LabError, match=f"could not create network namespace '{name}'"):
            net.create_netns(name)
        assert name in net.list_netns()
        assert net.link_exists(name, "lo")  # still a namespace, not an empty file
    finally:
        net.remove_netns(name)


def test_a_half_made_namespace_is_removed(monkeypatch):
    # What pyroute2 leaves when the bind mount fails after it made the mount
    # point (seen when another process removed the file in between).
    name = f"tcpemu-{os.getpid()}-zz4-iut"

    def half_create(ns: str) -> None:
        open(netns_path(ns), "x").close()
        raise FileNotFoundError(2, "mount failed")

    monkeypatch.setattr(net.netns, "create", half_create)
    with pytest.raises(LabError, match=f"could not create network namespace '{name}'.*mount failed"):
        net.create_netns(name)
    assert name not in net.list_netns()


@pytest.mark.parametrize("name", ["a/b", "../x", ".hidden", "-x", "", "x" * 256, "a b"])
def test_a_namespace_name_that_is_not_plain_is_refused(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where pyroute2 would have made a relative path
    with pytest.raises(UsageError, match="namespace name"):
        net.create_netns(name)
    with pytest.raises(UsageError, match="namespace name"):
        net.remove_netns(name)
    assert list(tmp_path.iterdir()) == []


async def test_offloads_off_and_sysctls_pinned():
    async with open_lab(iut_sysctls={"net.ipv4.tcp_sack": "0"}) as lab:
        for host in (lab.iut, lab.tst):
            state = await trio.to_thread.run_sync(net.set_offloads, host.netns, host.ifname)
            assert not any(state.values()), state
        assert await lab.iut.sysctl("net.ipv4.tcp_sack") == "0"
        assert await lab.iut.sysctl("net.ipv4.tcp_rmem") == "4096\t131072\t6291456"


async def test_frames_from_the_kernel_carry_valid_checksums():
    """With offloads off, what the IUT puts on the veth checks out with our verifier."""
    async with open_lab() as lab:
        link = await trio.to_thread.run_sync(PacketLink, lab.tst.ifname, lab.tst.netns)
        try:
            link.set_filter(tcp_to_addresses([ipaddress.ip_address(str(lab.tst.ip))]))
            sock = await lab.iut.socket()
            connect_nowait(sock, (str(lab.tst.ip), 20000))
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(link.fileno())
            raw = link.recv_batch(1)[0]
            frame = parse_frame_untrusted(raw)
            assert frame.segment.flags == TcpFlags.SYN
            assert frame.dst_mac.hex(":") == lab.alien_mac
            assert tcp_checksum_ok(raw) and ipv4_header_checksum_ok(raw)
            sock.close()
        finally:
            link.close()


async def test_open_engine_on_a_missing_interface_or_namespace_says_so(tcpemu_lab):
    from tcpemu import LabError, UsageError, open_engine

    with pytest.raises(UsageError, match="no interface 'nope0'"):
        async with open_engine("nope0", netns=tcpemu_lab.tst.netns):
            pass
    with pytest.raises(LabError, match="does not exist"):
        async with open_engine("tst0", netns="tcpemu-no-such-namespace"):
            pass


async def test_oversized_frame_is_a_usage_error(tcpemu_lab, tcpemu_engine):
    from tcpemu import SERVER, UsageError

    conn = tcpemu_engine.connection(
        SERVER,
        local=(str(tcpemu_lab.tst.ip), 20000),
        remote=(str(tcpemu_lab.iut.ip), 1234),
        local_mac=tcpemu_lab.alien_mac,
        remote_mac=tcpemu_lab.iut.mac,
    )
    with pytest.raises(UsageError, match=r"do not fit in one frame \(at most 1460 with MTU 1500\)"):
        await conn.send_msg(b"x" * 1461, ack=0)
    assert conn.next_seqn == conn.core.iss  # nothing was recorded as sent
    await conn.send_msg(b"y" * 1460, ack=0)  # exactly one full frame is fine
    assert tcpemu_engine.statistics().kernel_drops == 0


async def test_packet_ring_wraps_around_and_counts_truncation(tcpemu_lab):
    """A small ring read many times over keeps frames whole and in order."""
    from tcpemu import PacketRing
    from tcpemu.wire import Frame, Segment, build_frame

    lab = tcpemu_lab
    ring = await trio.to_thread.run_sync(
        lambda: PacketRing(lab.tst.ifname, lab.tst.netns, frame_size=512, frame_nr=8)
    )
    sender = await trio.to_thread.run_sync(PacketLink, lab.iut.ifname, lab.iut.netns)
    try:
        ring.set_filter(tcp_to_addresses([lab.tst.ip]))
        iut_mac, tst_mac = (
            bytes.fromhex(lab.iut.mac.replace(":", "")),
            bytes.fromhex(lab.tst.mac.replace(":", "")),
        )

        def frame(i: int, size: int = 10) -> bytes:
            seg = Segment(1000, 2000, i, 0, TcpFlags.ACK, 100, payload=bytes([i % 256]) * size)
            return build_frame(Frame(iut_mac, tst_mac, lab.iut.ip, lab.tst.ip, seg))

        got: list[bytes] = []
        sent = [frame(i) for i in range(40)]
        for i in range(0, 40, 5):  # five at a time: the 8-slot ring wraps five times
            for f in sent[i : i + 5]:
                sender.send(f)
            with trio.fail_after(5):
                while len(got) < i + 5:
                    await trio.lowlevel.wait_readable(ring.fileno())
                    got += ring.recv_batch(64)
        assert got == sent
        sender.send(frame(99, size=1000))  # longer than a 512-byte slot
        with trio.fail_after(5):
            await trio.lowlevel.wait_readable(ring.fileno())
            big = ring.recv_batch(8)
        assert len(big) == 1 and len(big[0]) < len(frame(99, size=1000))
        assert ring.truncated == 1
        assert ring.kernel_drops() == 0
    finally:
        ring.close()
        sender.close()


async def test_engine_reads_through_the_ring_by_default(tcpemu_lab, tcpemu_engine):
    from tcpemu import PacketRing

    assert isinstance(tcpemu_engine._link, PacketRing)


# Run in a child that is root but has given up every capability, as a user
# without privileges would run it: the errors must say what is missing.  It
# first enters a namespace the test made, so that even the raw socket it is
# refused would not have been on the host's interfaces.
_WITHOUT_CAPABILITIES = """
import ctypes, sys, trio, tcpemu
from tcpemu._netns import enter_netns
from tcpemu.lab import open_lab

enter_netns(sys.argv[1])

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

libc = ctypes.CDLL(None, use_errno=True)
if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:  # _LINUX_CAPABILITY_VERSION_3
    sys.exit("capset failed")

async def lab():
    async with open_lab():
        pass

async def engine():
    async with tcpemu.open_engine("lo"):
        pass

for what in (lab, engine):
    try:
        trio.run(what)
    except tcpemu.PrivilegeError as exc:
        assert isinstance(exc, PermissionError)
        print(what.__name__, exc)
    else:
        print(what.__name__, "opened")
"""


def test_missing_privileges_are_named():
    ns = f"tcpemu-{os.getpid()}-zz5-iut"
    net.create_netns(ns)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", _WITHOUT_CAPABILITIES, ns],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        net.remove_netns(ns)
    assert proc.returncode == 0, stderr[-3000:]
    assert len(stdout.splitlines()) == 2, stdout + stderr[-3000:]
    lab_line, engine_line = stdout.splitlines()
    assert lab_line.startswith(f"lab creating network namespace 'tcpemu-{proc.pid}-")
    assert "needs CAP_SYS_ADMIN (run as root)" in lab_line
    assert engine_line.startswith("engine a raw socket on 'lo' needs CAP_NET_RAW (run as root)")
    # nothing of the child's was left half made (other processes' labs may come and go meanwhile)
    assert [name for name in net.list_netns() if name.startswith(f"tcpemu-{proc.pid}-")] == []


# ------------------------------------------------ break_path / repair_path


def _queued(sock: trio.socket.SocketType) -> int:
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    import fcntl
    import struct
    import termios

    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


async def _kernel_pair(
    lab: lab_module.Lab, ipv: int
) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """A kernel TCP connection from the IUT to a kernel listener on the tester: (IUT, tester) sockets."""
    fam = socket.AF_INET6 if ipv == 6 else socket.AF_INET
    listener = await lab.tst.socket(fam)
    await listener.bind((str(lab.tst.address(ipv)), 20000))
    listener.listen(1)
    iut = await lab.iut.socket(fam)
    with trio.fail_after(10):
        await iut.connect((str(lab.tst.address(ipv)), 20000))
        tst, _ = await listener.accept()
    listener.close()
    return iut, tst


async def _recv_exactly(sock: trio.socket.SocketType, n: int) -> bytes:
    buf = bytearray()
    with trio.fail_after(10):
        while len(buf) < n:
            chunk = await sock.recv(n - len(buf))
            assert chunk, f"EOF after {len(buf)} of {n} bytes"
            buf += chunk
    return bytes(buf)


@pytest.mark.parametrize("ipv", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("direction", list(Direction), ids=[d.name for d in Direction])
@pytest.mark.parametrize("gateway", [False, True], ids=["two-host", "gateway"])
async def test_break_and_repair_with_a_kernel_tester(gateway: bool, direction: Direction, ipv: int) -> None:
    """Both directions, both labs, a kernel on each side: while broken the receiver
    gets nothing and the sender retransmits; after the repair the bytes arrive once."""
    async with open_lab(gateway=gateway, alien_neighbour=False) as lab:
        iut, tst = await _kernel_pair(lab, ipv)
        sender, receiver = (iut, tst) if direction is Direction.IUT_TO_TST else (tst, iut)
        data = bytes(i % 251 for i in range(1000))  # one segment: its retransmission is all that recovers
        await lab.break_path(direction)
        assert lab.broken == {direction}
        await sender.send(data)
        info = await wait_tcp_info(sender, lambda i: i.total_retrans >= 2, timeout=10, what="two retransmits")
        assert info.unacked >= 1
        assert _queued(receiver) == 0  # nothing got through
        await lab.repair_path(direction)
        assert lab.broken == frozenset()
        assert await _recv_exactly(receiver, len(data)) == data
        info = await wait_tcp_info(sender, lambda i: i.unacked == 0, timeout=10, what="data acknowledged")
        assert info.total_retrans >= 2 and info.state is TcpState.ESTABLISHED
        assert _queued(receiver) == 0  # once, and nothing else


async def _entries(
    lab: lab_module.Lab, host: lab_module.Host, addrs: list
) -> dict[str, tuple[str | None, int]]:
    table = {ipaddress.ip_address(ip): (mac, state) for ip, mac, state in await lab.neighbours(host)}
    return {str(a): table.get(a, (None, 0)) for a in addrs}


@pytest.mark.parametrize("gateway", [False, True], ids=["two-host", "gateway"])
async def test_repair_puts_back_the_alien_mac_not_the_testers(gateway: bool) -> None:
    """The emulated tester's lab: break points the entries (IPv4 and IPv6) at the black
    hole; repair puts back the alien MAC, never the tester interface's own."""
    async with open_lab(gateway=gateway) as lab:
        holder = lab.gw_tst if lab.gw_tst is not None else lab.iut
        addrs = [lab.tst.ip, lab.tst.ip6]
        permanent = net.NUD_PERMANENT
        before = await _entries(lab, holder, addrs)
        assert before == {str(a): (lab.alien_mac, permanent) for a in addrs}
        await lab.break_path(Direction.IUT_TO_TST)
        assert await _entries(lab, holder, addrs) == {str(a): (lab.blackhole_mac, permanent) for a in addrs}
        await lab.break_path(Direction.IUT_TO_TST)  # twice: still the entries from before the first
        await lab.repair_path(Direction.IUT_TO_TST)
        assert await _entries(lab, holder, addrs) == before


@pytest.mark.parametrize("gateway", [False, True], ids=["two-host", "gateway"])
async def test_repair_puts_back_learnt_and_missing_entries(gateway: bool) -> None:
    """A kernel tester's lab: entries the kernel learnt come back with their MAC
    (left for the kernel to confirm), entries that did not exist are removed again."""
    async with open_lab(gateway=gateway, alien_neighbour=False) as lab:
        iut, _ = await _kernel_pair(lab, 4)  # the IPv4 entries are learnt, the IPv6 ones not
        for direction in Direction:
            holder = lab._path_entry(direction)[0]
            dest = lab._path_entry(direction)[1]
            before = await _entries(lab, holder, [dest.ip, dest.ip6])
            assert before[str(dest.ip)][0] == dest.mac
            assert before[str(dest.ip6)] == (None, 0)
            await lab.break_path(direction)
            during = await _entries(lab, holder, [dest.ip, dest.ip6])
            assert {mac for mac, _ in during.values()} == {lab.blackhole_mac}
            await lab.repair_path(direction)
            after = await _entries(lab, holder, [dest.ip, dest.ip6])
            assert after[str(dest.ip)][0] == dest.mac
            assert not after[str(dest.ip)][1] & net.NUD_PERMANENT  # the kernel's entry again, not ours
            assert after[str(dest.ip6)] == (None, 0)
        await iut.send(b"after both repairs")  # and the path works
        await wait_tcp_info(iut, lambda i: i.unacked == 0, timeout=10, what="data acknowledged")


async def test_blackhole_mac_is_nobodys() -> None:
    async with open_lab(gateway=True) as lab:
        macs = {h.mac for h in (lab.iut, lab.tst, lab.gw_iut, lab.gw_tst) if h is not None}
        assert lab.blackhole_mac != lab.alien_mac
        assert lab.blackhole_mac not in macs
        first = int(lab.blackhole_mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01  # locally administered, unicast


async def test_break_path_refuses_what_is_not_a_direction() -> None:
    async with open_lab() as lab:
        with pytest.raises(
            UsageError, match=r"direction must be a Direction or one of 'iut->tst', 'tst->iut', got 'up'"
        ):
            await lab.break_path("up")
        with pytest.raises(UsageError, match="got 'sideways'"):
            await lab.repair_path("sideways")
        await lab.break_path("iut->tst")
        with pytest.raises(UsageError, match=r"use_kernel_tester: the path iut->tst is broken"):
            await lab.use_kernel_tester()
        await lab.repair_path("iut->tst")


async def test_repair_of_an_unbroken_path_is_deprecated_and_hands_it_to_the_kernel() -> None:
    async with open_lab() as lab:
        with pytest.warns(DeprecationWarning, match="not broken"):
            await lab.repair_path(Direction.IUT_TO_TST)
        assert (str(lab.tst.ip), lab.tst.mac, net.NUD_PERMANENT) in await lab.neighbours(lab.iut)
        await lab.add_alien_neighbour()
        assert (str(lab.tst.ip), lab.alien_mac, net.NUD_PERMANENT) in await lab.neighbours(lab.iut)
        await lab.use_kernel_tester()
        assert (str(lab.tst.ip), lab.tst.mac, net.NUD_PERMANENT) in await lab.neighbours(lab.iut)
