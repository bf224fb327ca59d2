"""The benchmarks run (tiny sizes, no scapy): they must not rot between measurements.

Figures from this run mean nothing; only that every benchmark completes,
checks what it moved (bytes delivered, connections made) and writes its
results.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

import tcpemu._accel

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).parents[2]


def test_quick_benchmark_run_writes_results(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--quick",
            "--repeat",
            "1",
            "--no-scapy",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "results.json").read_text())
    names = {r["name"] for r in data["results"]}
    for expected in (
        "pump: tcpemu classify+dispatch (ring)",
        "pump: bare recv_into loop",
        "connect() emulated p99",
        "connect() kernel p99",
        "bulk: kernel -> tcpemu recv_data",
        "bulk: kernel -> kernel",
        "send_msg 1 KiB: within the IUT's window, all delivered",
        "bulk: kernel -> tcpemu recv_data, 4 MiB window",
        "pump live: kernel drops",
        "connect() emulated busy_poll 1000 us p99",
        "scale: handshakes",
        "scale100k: handshakes",
        "pump: tcpemu classify+dispatch (ring) [Python path]",
        "bulk: kernel -> tcpemu recv_data [Python path]",
    ):
        assert expected in names
    assert data["meta"]["compiled"] is (tcpemu._accel.SPEEDUPS is not None)
    assert all(
        r["runs"] and all(v > 0 for v in r["runs"])
        for r in data["results"]
        if "destroy" not in r["name"] and "drops" not in r["name"]
    )
    assert {t["target"] for t in data["targets"]} >= {
        "pump vs bare recv_into",
        "connect p50 emulated / kernel",
        "connect p99 emulated / kernel",
        "bulk tcpemu / kernel",
        "pump live: kernel drops at the generator's rate",
        "handshakes/s (10,000 connections)",
        "handshakes/s (100,000 connections)",
    }
    assert (
        "| target | measured (median) | spread over runs | bound | met |"
        in (tmp_path / "results.md").read_text()
    )
