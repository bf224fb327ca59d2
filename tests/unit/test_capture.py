"""pcapng capture, per-connection traces, and the pytest report built from them."""

from __future__ import annotations

import ipaddress

import dpkt
import pytest
import trio

import tcpemu
from tcpemu import SERVER, MemoryLink, TcpFlags, UsageError
from tcpemu.capture import INBOUND, OUTBOUND, PcapngWriter, filter_pcapng, read_pcapng
from tcpemu.wire import Frame, Segment, build_frame, parse_frame_untrusted

A, B = ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2")
MA, MB = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def frame(sport: int = 40000, payload: bytes = b"", flags: TcpFlags = TcpFlags.ACK) -> bytes:
    return build_frame(Frame(MA, MB, A, B, Segment(sport, 20000, 1, 0, flags, 100, payload=payload)))


def test_writer_output_reads_back_with_dpkt(tmp_path):
    path = tmp_path / "c.pcapng"
    w = PcapngWriter(path, ifname="tst0")
    frames = [frame(payload=b"x" * n) for n in (0, 1, 2, 3, 100)]
    for i, f in enumerate(frames):
        w.write(f, INBOUND if i % 2 == 0 else OUTBOUND, ts_ns=1_700_000_000_123_456_789 + i)
    w.close()
    with open(path, "rb") as fh:
        reader = dpkt.pcapng.Reader(fh)
        assert reader.datalink() == dpkt.pcap.DLT_EN10MB
        got = list(reader)
    assert [bytes(buf) for _, buf in got] == frames
    # our reader: nanosecond timestamps and directions survive
    recs = list(read_pcapng(path))
    assert [r.time_ns for r in recs] == [1_700_000_000_123_456_789 + i for i in range(5)]
    assert [r.direction for r in recs] == [INBOUND, OUTBOUND, INBOUND, OUTBOUND, INBOUND]
    raw = path.read_bytes()
    assert raw[8:12] == b"\x4d\x3c\x2b\x1a"  # little-endian byte-order magic
    assert b"tst0" in raw[:200]  # the interface description names the interface


def test_batch_write_reads_back_with_dpkt_and_cuts_at_the_snap_length(tmp_path):
    path = tmp_path / "b.pcapng"
    w = PcapngWriter(path, ifname="tst0", snaplen=100)
    # repeated lengths share a block head; odd lengths need padding; 254 > snaplen is cut
    frames = [frame(payload=b"x" * n) for n in (0, 0, 1, 3, 3, 200, 0)]
    w.write_batch(frames, INBOUND)
    w.close()
    with open(path, "rb") as fh:
        got = [bytes(buf) for _, buf in dpkt.pcapng.Reader(fh)]
    assert got == [f[:100] for f in frames]
    recs = list(read_pcapng(path))
    assert len({r.time_ns for r in recs}) == 1 and {r.direction for r in recs} == {INBOUND}
    assert w.frames == len(frames)


def test_rotation_by_size_keeps_a_bounded_number_of_files(tmp_path):
    w = PcapngWriter(tmp_path / "r.pcapng", max_bytes=4096, max_files=3)
    for _ in range(200):
        w.write(frame(payload=b"y" * 200), INBOUND)
    w.close()
    files = sorted(tmp_path.iterdir())
    assert len(files) == 3 and w.files == sorted(
        w.files, key=lambda p: int(p.stem.split("-")[-1]) if "-" in p.stem else 0
    )
    assert sum(f.stat().st_size for f in files) <= 3 * (4096 + 400)
    assert all(list(read_pcapng(f)) for f in files)  # each rotated file is a whole pcapng


def test_rotation_by_time(tmp_path):
    w = PcapngWriter(tmp_path / "t.pcapng", max_seconds=0.0)  # every frame starts a new file
    for _ in range(3):
        w.write(frame(), INBOUND)
    w.close()
    assert len(w.files) == 4 and len(list(read_pcapng(w.files[0]))) == 1


def test_bad_rotation_settings_are_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="max_files bounds rotated files"):
        PcapngWriter(tmp_path / "x.pcapng", max_files=2)
    with pytest.raises(UsageError, match="at least 4096"):
        PcapngWriter(tmp_path / "x.pcapng", max_bytes=100)


def test_filter_one_connection(tmp_path):
    w = PcapngWriter(tmp_path / "all.pcapng")
    for port in (40000, 40001, 40000):
        w.write(frame(sport=port), INBOUND)
    reply = build_frame(Frame(MB, MA, B, A, Segment(20000, 40000, 9, 2, TcpFlags.ACK, 100)))
    w.write(reply, OUTBOUND)
    w.close()
    n = filter_pcapng(tmp_path / "all.pcapng", tmp_path / "one.pcapng", local=(B, 20000), remote=(A, 40000))
    assert n == 3
    recs = list(read_pcapng(tmp_path / "one.pcapng"))
    assert [r.direction for r in recs] == [INBOUND, INBOUND, OUTBOUND]


async def test_engine_captures_both_directions_and_keeps_a_trace(tmp_path):
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu, seed=1, capture=tmp_path / "e.pcapng") as engine:
        conn = engine.connection(
            SERVER, local=(str(B), 20000), remote=(str(A), None), local_mac=MB, remote_mac=MA
        )
        peer.send(frame(flags=TcpFlags.SYN))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.wait_open, 5)
            with trio.fail_after(5):
                await trio.lowlevel.wait_readable(peer.fileno())
            synack = parse_frame_untrusted(peer.recv_nowait()).segment
            peer.send(
                build_frame(Frame(MA, MB, A, B, Segment(40000, 20000, 2, synack.seq + 1, TcpFlags.ACK, 100)))
            )
        with pytest.raises(tcpemu.TcpemuTimeoutError):
            await conn.recv_msg(timeout=0.01)
        trace = conn.trace()
    recs = list(read_pcapng(tmp_path / "e.pcapng"))
    assert [r.direction for r in recs] == [INBOUND, OUTBOUND, INBOUND]
    assert parse_frame_untrusted(recs[1].frame).segment.flags == TcpFlags.SYN | TcpFlags.ACK
    text = "\n".join(trace)
    assert "< S 0:0(0) win 100" in text
    assert "> S. 0:0(0) ack 1 win 65535 <mss 1460>" in text
    assert "! state LISTEN -> SYN_RECEIVED" in text
    assert "! state SYN_RECEIVED -> ESTABLISHED" in text
    assert "! recv_msg: timed out after 0.01 s" in text


pytest_plugins = ["pytester"]

INNER = """
import ipaddress, trio, tcpemu
from tcpemu import MemoryLink, SERVER, TcpFlags
from tcpemu.wire import Frame, Segment, build_frame

async def run():
    emu, peer = MemoryLink.pair()
    async with tcpemu.open_engine(link=emu) as engine:
        conn = engine.connection(SERVER, local=("198.18.0.2", 20000), remote=("198.18.0.1", None),
                                 local_mac="02:00:00:00:00:02", remote_mac="02:00:00:00:00:01")
        seg = Segment(40000, 20000, 7, 0, TcpFlags.SYN, 100)
        peer.send(build_frame(Frame(bytes.fromhex("020000000001"), bytes.fromhex("020000000002"),
                  ipaddress.ip_address("198.18.0.1"), ipaddress.ip_address("198.18.0.2"), seg)))
        await conn.wait_msg(timeout=5)
        return conn

async def test_fails():
    await run()
    assert False, "the IUT misbehaved"

async def test_passes():
    await run()
"""


def test_pytest_report_has_capture_and_trace_and_keeps_only_failures(pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess()
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    assert "tcpemu capture" in out
    assert "tcpemu trace c1 198.18.0.2:20000 <-> 198.18.0.1:40000" in out
    assert "< S 0:0(0) win 100" in out
    captures = pytester.path / ".tcpemu" / "captures"
    kept = [p.name for p in captures.iterdir()]
    assert len(kept) == 1 and "test_fails" in kept[0]
    assert any(f.suffix == ".pcapng" for f in (captures / kept[0]).iterdir())


def test_keep_captures_option_keeps_passing_ones_too(pytester):
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest_subprocess("--tcpemu-keep-captures", "-k", "passes")
    result.assert_outcomes(passed=1)
    assert len(list((pytester.path / ".tcpemu" / "captures").iterdir())) == 1
