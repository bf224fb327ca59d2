"""Killed runs leave nothing the next one trips over; parallel runs never collide."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys

import pytest

from tcpemu import net
from tcpemu.lab import open_lab

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).parents[2]

HOLD_A_LAB = """
import sys, trio
from tcpemu.lab import open_lab
async def main():
    async with open_lab() as lab:
        print(" ".join(lab.namespaces), flush=True)
        await trio.sleep_forever()
trio.run(main)
"""


async def test_sigkill_mid_run_is_cleaned_up_by_the_next_lab():
    child = subprocess.Popen([sys.executable, "-c", HOLD_A_LAB], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        names = child.stdout.readline().split()
        assert len(names) == 2 and set(names) <= set(net.list_netns())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert set(names) <= set(net.list_netns())  # the killed run could not clean up
    async with open_lab() as lab:
        left = set(net.list_netns())
        assert not set(names) & left, f"stale namespaces survived: {set(names) & left}"
        assert set(lab.namespaces) <= left
    assert not set(lab.namespaces) & set(net.list_netns())


def test_two_xdist_workers_never_collide(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-n",
            "2",
            "-q",
            "-p",
            "no:cacheprovider",
            "--tcpemu-capture-dir",
            str(tmp_path),
            str(ROOT / "tests" / "e2e" / "test_kernel.py"),
            str(ROOT / "tests" / "e2e" / "test_lab.py"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "passed" in proc.stdout and "failed" not in proc.stdout
