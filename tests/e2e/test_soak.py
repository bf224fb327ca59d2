"""Soak against the kernel: 200 connections for 60 s with every fault kind on."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tcpemu.faults import Faults
from tcpemu.soak import SoakResult, run_soak

pytestmark = pytest.mark.e2e

ALL_FAULTS = Faults(drop=0.01, duplicate=0.01, reorder=0.01, delay=0.01)


async def test_soak_200_connections_60_s_all_faults_every_byte_checked():
    result = await run_soak(connections=200, duration=60, seed=3, faults_out=ALL_FAULTS, faults_in=ALL_FAULTS)
    assert result.errors == (), result.errors[:10]
    assert result.mismatches == 0
    assert result.opened > 200 and result.closed == result.opened  # churn: every pair reconnected
    assert result.bytes_to_iut > 50_000_000 and result.bytes_to_emulator > 50_000_000
    kinds = {f"{d}-{k}" for d in ("in", "out") for k in ("drop", "duplicate", "reorder", "delay")}
    assert set(result.faults) == kinds and all(result.faults[k] > 0 for k in kinds)
    assert result.retransmits_sent > 0 and result.retransmits_seen > 0  # both ends repaired losses
    assert result.rss_growth < 0.05, (result.rss_after_warmup, result.rss_peak_after_warmup)
    assert result.passed


def test_soak_command_prints_progress_and_a_verdict():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tcpemu",
            "soak",
            "--connections",
            "5",
            "--duration",
            "3",
            "--faults-out",
            "drop=0.02",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "opened" in proc.stdout and "MB/s" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith("PASS:") or "PASS:" in proc.stdout


def test_a_mismatch_or_an_error_fails_the_soak():
    base = dict(
        duration=1.0,
        connections=1,
        opened=3,
        closed=3,
        bytes_to_iut=1,
        bytes_to_emulator=1,
        mismatches=0,
        errors=(),
        retransmits_seen=0,
        retransmits_sent=0,
        faults={},
        kernel_drops=0,
        rss_after_warmup=100,
        rss_peak_after_warmup=104,
    )
    assert SoakResult(**base).passed
    assert not SoakResult(**{**base, "mismatches": 1}).passed
    assert not SoakResult(**{**base, "errors": ("x",)}).passed
    assert not SoakResult(**{**base, "rss_peak_after_warmup": 106}).passed


async def test_a_stalled_connection_is_named_with_its_step_and_what_it_waited_for():
    # every frame the emulator sends is lost: the IUT's SYN is never answered
    result = await run_soak(
        connections=2, duration=1, seed=5, faults_out=Faults(drop=1.0), stall_timeout=1.5, rss_interval=0.5
    )
    assert not result.passed and result.closed == 0
    assert result.errors, "two stalled pairs and no error"
    for pair in (0, 1):
        assert (
            f"pair {pair} connection 0: 1.5 s without progress; "
            f"open: waiting for a connection from the emulated listener on port {20000 + pair} "
            "(the IUT's SYN, our SYN-ACK, the IUT's ACK) (IUT socket SYN_SENT, listener: "
        ) in "\n".join(result.errors), result.errors
    assert not any("TooSlowError" in e for e in result.errors)


async def test_stop_ends_a_soak_at_once_and_is_not_an_error():
    import trio

    stop = trio.Event()
    stop.set()  # as a Ctrl-C during set-up does: the pairs are stopped as soon as they start
    with trio.fail_after(60):
        result = await run_soak(connections=3, duration=600, seed=2, stop=stop)
    assert result.interrupted and not result.passed
    assert result.errors == () and result.mismatches == 0  # abandoned connections are no failures
    assert result.duration < 60
