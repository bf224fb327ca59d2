"""The ``tcpemu`` command and the pytest plugin against the real system: capabilities taken
away or granted alone, stale labs, a soak interrupted with Ctrl-C or summarised as JSON, and
the plugin's connection factory and marker against the kernel."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import trio

import tcpemu
from tcpemu import net
from tcpemu.faults import Faults
from tcpemu.lab import Lab, connect_nowait

pytestmark = pytest.mark.e2e
OTHER_UID = "it switches to another uid, which a user namespace mapping one uid cannot give"

TCPEMU = [sys.executable, "-m", "tcpemu"]

# A child that gives up capabilities before it runs what argv[2:] names.  It first
# enters a namespace the test made, so that even what it is refused is never tried on the
# host's interfaces (and imports first: the user nobody cannot read root's Python).
# "none": root without any capability; "root-three": root with exactly CAP_SYS_ADMIN,
# CAP_NET_ADMIN and CAP_NET_RAW; "three": the user nobody (uid 65534) with exactly those;
# "four": and CAP_DAC_OVERRIDE.  (pytest runs as root only: it imports, as it goes, more of
# root's Python than the user nobody may read.)
_CHILD = """
import ctypes, os, sys
import pytest, trio, tcpemu, tcpemu.cli, tcpemu.pytest_plugin  # read while the files are readable
import tcpemu.linkcheck, tcpemu.packetdrill.cli
from tcpemu._netns import enter_netns

enter_netns(sys.argv[1])
mode, what = sys.argv[2], sys.argv[3:]

class Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

class Data(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in ("effective", "permitted", "inheritable")]

def give_up_privileges():
    libc = ctypes.CDLL(None, use_errno=True)
    if mode in ("three", "four"):  # the user nobody
        PR_SET_KEEPCAPS = 8
        if libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0:
            sys.exit("prctl failed")
        os.setgroups([])
        os.setresgid(65534, 65534, 65534)
        os.setresuid(65534, 65534, 65534)
    mask = {"none": 0, "root-three": 0, "three": 0, "four": 1 << 1}[mode]
    if mode != "none":
        mask |= (1 << 21) | (1 << 12) | (1 << 13)
    data = (Data * 2)()
    data[0].effective = data[0].permitted = mask
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), data) != 0:  # _LINUX_CAPABILITY_VERSION_3
        sys.exit("capset failed")

give_up_privileges()
if what[0] == "pytest":
    args = ["-p", "no:cacheprovider", "-rs", "-W", "ignore::pytest.PytestAssertRewriteWarning"]
    sys.exit(pytest.main([*args, *what[1:]]))
elif what[0] == "check":
    from tcpemu.cli import privilege_problem
    print("uid", os.getuid(), "problem", privilege_problem("tcpemu demo"))
elif what[0] == "engine":
    async def engine():
        async with tcpemu.open_engine("lo"):
            print("engine opened")
    trio.run(engine)
else:
    sys.exit(tcpemu.cli.main(what))
"""


def _in_child(mode: str, *what: str, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    ns = f"tcpemu-{os.getpid()}-cl{time.monotonic_ns() % 10**6}-iut"
    net.create_netns(ns)
    try:
        return subprocess.run(
            [sys.executable, "-c", _CHILD, ns, mode, *what],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=cwd,
        )
    finally:
        net.remove_netns(ns)


@pytest.mark.parametrize("command", ["demo", "soak"])
def test_a_command_without_capabilities_names_them_and_exits_2(command):
    proc = _in_child("none", command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        f"tcpemu {command} needs CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW (namespaces, veth links and raw "
        "sockets); this process lacks CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW: run it as root or grant "
        "those capabilities"
    ) in proc.stderr
    assert "Traceback" not in proc.stderr


_E2E_TEST = """
import pytest, tcpemu

@pytest.mark.e2e
async def test_a_lab(tcpemu_lab):
    assert tcpemu_lab.iut.netns in tcpemu.net.list_netns()
"""


@pytest.mark.tcpemu_needs_root(
    "it switches to another uid, which a user namespace mapping one uid cannot give"
)
def test_without_root_the_three_capabilities_open_engines_and_the_lab_needs_its_directory_too():
    proc = _in_child("three", "check")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    unwritable = (
        "tcpemu demo cannot name network namespaces: /var/run/netns is not writable by this process; "
        "run it as root, or grant CAP_DAC_OVERRIDE too (or make the directory writable)"
    )
    assert proc.stdout.strip() == f"uid 65534 problem {unwritable}"
    # the capabilities alone do open an engine: a raw socket in the namespace the test made
    proc = _in_child("three", "engine")
    assert proc.returncode == 0 and proc.stdout.strip() == "engine opened", proc.stdout + proc.stderr
    refused = _in_child("three", "demo")
    assert refused.returncode == 2 and refused.stderr.strip() == unwritable, refused.stdout + refused.stderr


@pytest.mark.tcpemu_needs_root(
    "it switches to another uid, which a user namespace mapping one uid cannot give"
)
def test_the_three_capabilities_and_dac_override_run_the_lab_without_root():
    proc = _in_child("four", "check")
    assert proc.returncode == 0 and proc.stdout.strip() == "uid 65534 problem None", proc.stdout + proc.stderr
    demo = _in_child("four", "demo", "--no-trace")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert demo.stdout.strip().splitlines()[-1].startswith("PASS:")


def _suite(directory: pathlib.Path) -> str:
    (directory / "test_inner.py").write_text(_E2E_TEST)
    (directory / "pytest.ini").write_text("[pytest]\ntrio_mode = true\n")
    return str(directory)


def test_the_plugin_runs_e2e_tests_with_exactly_the_three_capabilities(tmp_path):
    passed = _in_child("root-three", "pytest", "--tcpemu-require-e2e", "test_inner.py", cwd=_suite(tmp_path))
    assert passed.returncode == 0 and "1 passed" in passed.stdout, passed.stdout + passed.stderr


def test_the_plugin_skips_or_fails_e2e_tests_without_capabilities(tmp_path):
    cwd = _suite(tmp_path)
    skipped = _in_child("none", "pytest", "test_inner.py", cwd=cwd)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 skipped" in skipped.stdout
    assert "this process lacks CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW" in skipped.stdout
    failed = _in_child("none", "pytest", "--tcpemu-require-e2e", "test_inner.py", cwd=cwd)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "end-to-end test required but cannot run: this test needs CAP_SYS_ADMIN" in failed.stdout


# ------------------------------------------------------------------ cleanup


# Any other process's lab removes stale namespaces, so the cleanup tests run in a mount
# namespace of their own with an empty tmpfs on /run/netns: what they make there is stale for
# them alone, and their cleanup can never remove another process's namespace.
_CLEANUP = """
import json, subprocess, sys
from tcpemu import net

def run(*argv):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}

tcpemu = [sys.executable, "-m", "tcpemu", "cleanup"]
report = {"empty": run(*tcpemu)}
child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
name = f"tcpemu-{child.pid}-zc1-iut"
net.create_netns(name)
child.communicate(timeout=30)  # its process is gone now: the lab is stale
live = f"tcpemu-{subprocess.os.getpid()}-zc2-iut"  # this live process's lab is not
net.create_netns(live)
report["name"], report["live"] = name, live
report["dry_run"] = run(*tcpemu, "--dry-run")
report["after_dry_run"] = net.list_netns()
report["no_caps"] = run(sys.executable, "-c", sys.argv[1], name, "none", "cleanup")
report["after_no_caps"] = net.list_netns()
report["cleanup"] = run(*tcpemu)
report["after_cleanup"] = net.list_netns()
net.remove_netns(live)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def cleanup_report() -> dict[str, object]:
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            'mount -t tmpfs tcpemu-test /run/netns && exec "$@"',
            "sh",
            sys.executable,
            "-c",
            _CLEANUP,
            _CHILD,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_cleanup_with_nothing_stale_says_so(cleanup_report):
    empty = cleanup_report["empty"]
    assert empty == {"rc": 0, "out": "removed 0 stale lab namespaces: none found\n", "err": ""}


def test_cleanup_dry_run_lists_and_removes_nothing(cleanup_report):
    name, live = cleanup_report["name"], cleanup_report["live"]
    dry = cleanup_report["dry_run"]
    assert dry == {"rc": 0, "out": f"would remove 1 stale lab namespaces: {name}\n", "err": ""}
    assert sorted(cleanup_report["after_dry_run"]) == sorted([name, live])


def test_cleanup_without_the_right_to_remove_fails_and_says_why(cleanup_report):
    name = cleanup_report["name"]
    refused = cleanup_report["no_caps"]
    assert refused["rc"] == 2 and refused["out"] == "", refused
    assert refused["err"] == (
        f"FAIL: 1 stale lab namespaces not removed ({name}): tcpemu cleanup needs CAP_SYS_ADMIN "
        "(to unmount and remove namespaces); this process lacks CAP_SYS_ADMIN: run it as root or "
        "grant that capability\n"
    )
    assert name in cleanup_report["after_no_caps"]


def test_cleanup_removes_a_stale_lab_names_it_and_leaves_live_ones(cleanup_report):
    name, live = cleanup_report["name"], cleanup_report["live"]
    removed = cleanup_report["cleanup"]
    assert removed == {"rc": 0, "out": f"removed 1 stale lab namespaces: {name}\n", "err": ""}
    assert cleanup_report["after_cleanup"] == [live]


# ------------------------------------------------------------------ soak


def _soak(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TCPEMU, "soak", "--connections", "4", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _interrupt_after_progress(proc: subprocess.Popen[str], progress: object) -> tuple[str, str, str]:
    """Wait for a progress line showing an opened connection, then Ctrl-C (SIGINT) the soak;
    returns the progress lines read, stdout and stderr."""
    seen = []
    deadline = time.monotonic() + 60
    for line in progress:  # type: ignore[attr-defined]
        seen.append(line)
        if "opened" in line and " opened      0 " not in line:
            break
        assert time.monotonic() < deadline, "no connection opened within 60 s: " + "".join(seen)
    else:
        pytest.fail("the soak ended before it showed progress: " + "".join(seen))
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return "".join(seen), out, err


def test_ctrl_c_ends_a_soak_with_its_partial_summary_and_exit_130():
    proc = _soak("--duration", "600", "--progress", "0.2")
    seen, out, err = _interrupt_after_progress(proc, proc.stdout)
    out = seen + out
    assert proc.returncode == 130, out + err
    last = out.strip().splitlines()[-1]
    assert last.startswith("INTERRUPTED: ") and "4 pairs" in last, out
    assert "interrupted: stopping the connections and removing the lab" in out
    assert "Traceback" not in err and "ExceptionGroup" not in err, err


def test_ctrl_c_with_json_prints_the_partial_summary_as_json():
    proc = _soak("--duration", "600", "--progress", "0.2", "--json")
    _, out, err = _interrupt_after_progress(proc, proc.stderr)
    assert proc.returncode == 130, out + err
    summary = json.loads(out)
    assert summary["verdict"] == "INTERRUPTED" and summary["interrupted"] and not summary["passed"]
    assert summary["connections"] == 4 and summary["opened"] >= 1


def test_soak_json_summary_of_a_passing_run():
    proc = subprocess.run(
        [
            *TCPEMU,
            "soak",
            "--connections",
            "3",
            "--duration",
            "2",
            "--progress",
            "0",
            "--json",
            "--faults-out",
            "drop=0.02",
            "--seed",
            "9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads(proc.stdout)  # stdout holds the summary alone
    assert summary["verdict"] == "PASS" and summary["passed"]
    assert summary["seed"] == 9 and summary["faults_out"] == "drop=0.02" and summary["faults_in"] == "none"
    assert summary["closed"] >= 3 and summary["errors"] == [] and summary["mismatches"] == 0
    assert summary["bytes_to_iut"] == summary["bytes_to_emulator"] == summary["closed"] * 256 * 1024
    assert summary["faults"].get("out-drop", 0) > 0
    assert proc.stderr == ""  # --progress 0: no progress lines


# ------------------------------------------------------------------ the plugin's factory and marker


async def _iut_connects(lab: Lab, conn: tcpemu.Connection, port: int) -> trio.socket.SocketType:
    iut = await lab.iut.socket()
    connect_nowait(iut, (str(lab.tst.ip), port))
    await conn.wait_open(timeout=5)
    return iut


async def test_the_connection_factory_fills_in_the_lab(tcpemu_lab, tcpemu_connection):
    first, second = tcpemu_connection(), tcpemu_connection()
    assert (first.local, second.local) == ((str(tcpemu_lab.tst.ip), 20000), (str(tcpemu_lab.tst.ip), 20001))
    iut = await _iut_connects(tcpemu_lab, second, 20001)
    await iut.send(b"over the factory's connection")
    assert await second.recv_data(idle=0.2, timeout=5) == b"over the factory's connection"
    with pytest.raises(tcpemu.UsageError, match="a CLIENT connection needs remote_port"):
        tcpemu_connection(tcpemu.CLIENT)
    with pytest.raises(tcpemu.UsageError, match="local_mac is filled in from the lab"):
        tcpemu_connection(local_mac="02:00:00:00:00:09")


@pytest.mark.tcpemu(faults_out=Faults(drop=1.0), reliable=True)
async def test_the_marker_configures_the_engine(tcpemu_lab, tcpemu_engine, tcpemu_connection):
    conn = tcpemu_connection()
    assert conn.core.reliable
    iut = await tcpemu_lab.iut.socket()
    connect_nowait(iut, (str(tcpemu_lab.tst.ip), 20000))
    # every frame the engine sends is dropped: our SYN-ACK never reaches the IUT
    with pytest.raises(tcpemu.TcpemuTimeoutError):
        await conn.wait_open(timeout=0.5)
    assert tcpemu_engine.statistics().faults.get("out-drop", 0) >= 1
    assert tcpemu.tcp_state(iut) is tcpemu.TcpState.SYN_SENT


@pytest.mark.tcpemu(timestamps=False, mss=536)
async def test_the_marker_configures_the_connections(tcpemu_lab, tcpemu_connection):
    conn = tcpemu_connection()
    iut = await _iut_connects(tcpemu_lab, conn, 20000)
    await tcpemu.wait_tcp_state(iut, tcpemu.TcpState.ESTABLISHED, timeout=5)
    info = tcpemu.tcp_info(iut)
    assert info.snd_mss == 536  # the MSS our SYN-ACK announced
    assert not info.options & 1  # TCPI_OPT_TIMESTAMPS: not agreed, though the IUT offered them
