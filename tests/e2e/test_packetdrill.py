"""The packetdrill runner and the notation helpers against the Linux kernel in test-made namespaces.

The scripts under tests/packetdrill/pass must pass; each one under
tests/packetdrill/fail must fail at the line and for the reason its first
comment names, so that a runner which passes everything cannot pass here.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import pathlib

import pytest
import trio

import tcpemu
from tcpemu import notation
from tcpemu.lab import connect_nowait
from tcpemu.packetdrill import cli
from tcpemu.packetdrill.runner import LinkTarget, run_script, run_scripts

from .conftest import EMU_PORT, family

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).parents[2]
SCRIPTS = ROOT / "tests" / "packetdrill"
PASSING = sorted((SCRIPTS / "pass").glob("*.pkt"))

# script -> (the first departing line, words its report must hold)
MUST_FAIL = {
    "wrong_ack.pkt": (12, ["packet differs", "ack: expected 1002, got 1001"]),
    "missing_segment.pkt": (10, ["missing: no packet from the stack"]),
    "wrong_errno.pkt": (7, ["read() returned -1 ECONNREFUSED"]),
    "late_segment.pkt": (9, ["timing:", "late by"]),
    "wrong_ecn_mark.pkt": (13, ["ECN: expected [noecn], got [ect0]"]),
}


def test_every_failing_script_has_its_expectation():
    assert sorted(p.name for p in (SCRIPTS / "fail").glob("*.pkt")) == sorted(MUST_FAIL)
    assert len(PASSING) >= 5


@pytest.mark.parametrize("script", PASSING, ids=[p.stem for p in PASSING])
async def test_script_passes_against_the_kernel(script, tmp_path):
    result = await run_script(script, artifacts=tmp_path)
    assert result.verdict == "PASS", result.line_text() + "\n" + "\n".join(result.trace[-20:])
    assert not list(tmp_path.iterdir())  # nothing kept for a pass


@pytest.mark.parametrize("name", sorted(MUST_FAIL))
async def test_script_fails_where_it_must(name, tmp_path):
    line, words = MUST_FAIL[name]
    result = await run_script(SCRIPTS / "fail" / name, artifacts=tmp_path)
    report = result.line_text()
    assert result.verdict == "FAIL" and result.line == line, report
    for word in words:
        assert word in report, report
    # the capture and the trace of a failure are kept
    assert result.capture is not None and pathlib.Path(result.capture).stat().st_size > 0
    assert (tmp_path / (pathlib.Path(name).stem + ".trace.txt")).read_text().strip()


async def test_a_late_segment_reports_how_late():
    result = await run_script(SCRIPTS / "fail" / "late_segment.pkt")
    # the SYN is sent again at 1 s, the script says 0.9 s: about 100 ms late
    assert result.time_error is not None and 0.07 < result.time_error < 0.2, result.line_text()


async def test_the_same_script_passes_over_ipv6():
    result = await run_script(SCRIPTS / "pass" / "passive_open_data_close.pkt", ip_version="ipv6")
    assert result.verdict == "PASS", result.line_text()


async def test_a_tighter_tolerance_makes_a_passing_script_fail():
    """The SYN retransmission is 1 s after the SYN; with no tolerance at all it cannot be on time."""
    result = await run_script(SCRIPTS / "pass" / "syn_retransmit.pkt", tolerance_usecs=0, tolerance_percent=0)
    assert result.verdict == "FAIL" and "timing:" in result.reason, result.line_text()


async def test_unsupported_constructs_are_skipped_with_their_name(tmp_path):
    script = tmp_path / "sendfile.pkt"
    script.write_text("0 socket(..., SOCK_STREAM, IPPROTO_TCP) = 3\n+0 sendfile(3, 4, ..., 10) = 10\n")
    result = await run_script(script)
    assert (result.verdict, result.reason) == ("SKIP", "unsupported: sendfile()")
    assert result.line_text() == f"SKIP {script}: unsupported: sendfile()"


async def test_cli_prints_a_line_per_script_and_the_summary(tmp_path):
    args = argparse.Namespace(
        scripts=[
            str(SCRIPTS / "pass" / "passive_open_data_close.pkt"),
            str(SCRIPTS / "fail" / "wrong_ack.pkt"),
        ],
        ip_version=None,
        tolerance_usecs=None,
        tolerance_percent=None,
        jobs=1,
        artifacts=str(tmp_path),
        sysctl=[],
        seed=1,
        link=None,
        netns=None,
        local_ip=None,
        remote_ip=None,
        remote_mac=None,
        local_mac=None,
        handler=None,
    )
    out = io.StringIO()
    # cli_main runs its own trio loop: from a worker thread, away from the test's
    status = await trio.to_thread.run_sync(cli.cli_main, args, out)
    lines = out.getvalue().splitlines()
    assert status == 1
    assert lines[0].startswith("PASS ") and lines[1].startswith("FAIL ") and ":12: packet differs" in lines[1]
    assert lines[-1] == "1 passed, 1 failed, 0 skipped"


def _handler_example():
    path = ROOT / "docs" / "examples" / "packetdrill_handler.py"
    spec = importlib.util.spec_from_file_location("packetdrill_handler_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_link_target_with_the_documented_handler(tcpemu_lab):
    example = _handler_example()
    lab = tcpemu_lab

    def target(handler):
        return LinkTarget(
            ifname=lab.tst.ifname,
            netns=lab.tst.netns,
            local_ip=str(lab.iut.ip),
            remote_ip=str(lab.tst.ip),
            tester_mac=lab.alien_mac,
            local_mac=None,  # asked with ARP over the link
            handler=handler,
        )

    # what this test is about is the link target and its verdicts, not timing (tested elsewhere):
    # a generous tolerance keeps a busy machine's scheduling out of it
    loose = 50_000
    handler = example.NamespaceSockets(lab.iut)
    result = await run_script("link.pkt", text=example.SCRIPT, target=target(handler), tolerance_usecs=loose)
    for sock in handler.fds.values():
        sock.close()
    assert result.verdict == "PASS", result.line_text()
    # the same script with a wrong ack fails over the link too
    handler = example.NamespaceSockets(lab.iut)
    wrong = example.SCRIPT.replace("> P. 1:101(100) ack 1", "> P. 1:101(100) ack 9")
    result = await run_script("link.pkt", text=wrong, target=target(handler), tolerance_usecs=loose)
    for sock in handler.fds.values():
        sock.close()
    assert result.verdict == "FAIL" and "ack: expected 9, got 1" in result.reason, result.line_text()
    # without a handler, a script with system calls is skipped with that reason
    result = await run_script("link.pkt", text=example.SCRIPT, target=target(None))
    assert result.verdict == "SKIP" and "without a syscall handler" in result.reason


async def test_notation_expect_and_send_against_the_kernel(tcpemu_lab, tcpemu_engine, ipv):
    lab = tcpemu_lab
    conn = tcpemu_engine.connection(
        tcpemu.SERVER,
        local=(str(lab.tst.address(ipv)), EMU_PORT),
        remote=(str(lab.iut.address(ipv)), None),
        local_mac=lab.alien_mac,
        remote_mac=lab.iut.mac,
    )
    iut = await lab.iut.socket(family(ipv))
    connect_nowait(iut, (str(lab.tst.address(ipv)), EMU_PORT))
    mss = 1460 if ipv == 4 else 1440
    await notation.expect(conn, f"S 0:0(0) <mss {mss},sackOK,TS val * ecr 0,nop,wscale *>", within=2)
    await notation.send(conn, "S. 0:0(0) ack 1 win 1000 <mss 1000>")
    await notation.expect(conn, ". 1:1(0) ack 1", within=1)
    await iut.send(b"x" * 10)
    await notation.expect(conn, "P. 1:11(10) ack 1", within=1)
    # nothing acknowledged: the kernel sends the data again (tail loss probe or RTO) ...
    await notation.expect(conn, "P. 1:11(10) ack 1", within=3)
    # ... and a mismatch is a plain assertion failure naming both segments
    await notation.send(conn, ". 1:1(0) ack 11 win 1000")
    await notation.send(conn, "P. 1:6(5) ack 11 win 1000", payload=b"hello")
    with pytest.raises(AssertionError, match=r"expected: \. 11:11\(0\) ack 7") as info:
        await notation.expect(conn, ". 11:11(0) ack 7", within=1)
    assert "got:      . 11:11(0) ack 6" in str(info.value)
    assert await iut.recv(10) == b"hello"
    await notation.expect_nothing(conn, for_=0.1)
    iut.close()


async def test_jobs_run_in_worker_processes_and_keep_the_order():
    paths = [SCRIPTS / "fail" / "wrong_ack.pkt", SCRIPTS / "pass" / "passive_open_data_close.pkt"] * 2
    seen = []
    results = await run_scripts(paths, jobs=2, on_result=seen.append)
    assert [r.verdict for r in results] == ["FAIL", "PASS", "FAIL", "PASS"]
    assert [r.path for r in results] == [str(p) for p in paths]
    assert results[0].line == 12 and "ack: expected 1002, got 1001" in results[0].reason
    assert sorted(id(r) for r in seen) == sorted(id(r) for r in results)


TICK_SCRIPT = """--tcp_ts_tick_usecs=1000
--tolerance_usecs=10000
0     socket(..., SOCK_STREAM, IPPROTO_TCP) = 3
+0    fcntl(3, F_SETFL, O_RDWR|O_NONBLOCK) = 0
+0    connect(3, ..., ...) = -1 EINPROGRESS (Operation now in progress)
+0    > S 0:0(0) <mss 1460,sackOK,TS val 100 ecr 0,nop,wscale 7>
+.1   < S. 0:0(0) ack 1 win 5792 <mss 1200,sackOK,TS val 700 ecr 100,nop,wscale 6>
+0    > . 1:1(0) ack 1 <nop,nop,TS val {tsval} ecr 700>
"""


@pytest.mark.parametrize("tsval, verdict", [(200, "PASS"), (150, "FAIL")])
async def test_ts_val_is_checked_against_the_tick_when_the_script_gives_one(tsval, verdict):
    """With --tcp_ts_tick_usecs=1000 the kernel's TS val moves 1 a millisecond: 100 ms after
    the SYN's 100 it says about 200, never 150."""
    result = await run_script("tick.pkt", text=TICK_SCRIPT.format(tsval=tsval))
    assert result.verdict == verdict, result.line_text()
    if verdict == "FAIL":
        assert result.line == 8 and "TS val: expected 150, got 2" in result.reason
