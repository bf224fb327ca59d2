"""The ``tcpemu`` command at its edges, without a network: arguments, help, capabilities, the
soak's streamed pattern, its summary and its timeout message."""

from __future__ import annotations

import argparse
import json
import math
import re

import pytest
import trio

import tcpemu
from tcpemu import cli
from tcpemu.soak import BLOCK, Pattern, SoakResult, _Exchange, pattern


def _soak_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["soak", *argv])
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--duration", "0"], "--duration: '0' is out of range: expected a number of seconds > 0"),
        (["--duration", "-3"], "--duration: '-3' is out of range"),
        (["--duration", "nan"], "--duration: 'nan' is out of range"),
        (["--duration", "inf"], "--duration: 'inf' is out of range"),
        (["--connections", "-5"], "--connections: '-5' is out of range: expected a whole number of pairs"),
        (["--connections", "0"], "--connections: '0' is out of range"),
        (["--connections", "2.5"], "--connections: '2.5' is not a whole number of pairs"),
        (["--progress", "-1"], "--progress: '-1' is out of range: expected 0 (no progress lines) or"),
        (["--progress", "0.001"], "--progress: '0.001' is out of range"),
        (["--stall-timeout", "0"], "--stall-timeout: '0' is out of range: expected a number of seconds > 0"),
        (["--churn-bytes", "0"], "--churn-bytes: '0' is out of range: expected a whole number of bytes >= 1"),
        (["--faults-out", "drop=2"], "--faults-out: 'drop=2': fault probability drop must be within 0..1"),
        (["--faults-in", "lose=0.1"], "--faults-in: 'lose=0.1': unknown fault 'lose'"),
    ],
)
def test_bad_soak_arguments_are_usage_errors_naming_argument_value_and_range(capsys, argv, named):
    err = _soak_error(capsys, *argv)
    assert named in err
    assert "Traceback" not in err and "ExceptionGroup" not in err


def test_good_soak_arguments_parse_to_their_values():
    args = cli.build_parser().parse_args(
        [
            "soak",
            "--connections",
            "3",
            "--duration",
            "2.5",
            "--progress",
            "0",
            "--faults-in",
            "drop=0.1",
            "--json",
        ]
    )
    assert (args.connections, args.duration, args.progress, args.json) == (3, 2.5, 0, True)
    assert cli._parse_faults(args.faults_in) == tcpemu.faults.Faults(drop=0.1)
    assert cli._parse_faults(args.faults_out) is None  # the default, "none"


def test_version(capsys):
    for argv in (["--version"], ["soak", "--version"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(argv)
        assert exit_info.value.code == 0
        assert capsys.readouterr().out.strip() == f"tcpemu {tcpemu.__version__}"


def test_soak_help_shows_every_option_with_its_default(capsys):
    with pytest.raises(SystemExit):
        cli.main(["soak", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out).split(" options: ", 1)[1]
    parser = cli.build_parser()
    soak = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["soak"]
    options = [a for a in soak._actions if a.default is not argparse.SUPPRESS and a.option_strings]
    assert {o.option_strings[0] for o in options} >= {
        "--connections",
        "--duration",
        "--seed",
        "--churn-bytes",
        "--faults-out",
        "--faults-in",
        "--progress",
        "--json",
    }
    for option in options:
        flag = option.option_strings[0]
        shown = {None: "none", "": "none"}.get(option.default, str(option.default))
        block = text.split(f" {flag} ", 1)[1].split(" --", 1)[0]
        assert f"(default: {shown})" in block, (flag, block)


def _status(tmp_path, cap_eff: str):
    path = tmp_path / f"status-{cap_eff}"
    path.write_text(
        f"Name:\tpython\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\nCapBnd:\t000001ffffffffff\n"
    )
    return str(path)


def test_capabilities_are_read_from_the_effective_set(tmp_path):
    everything = _status(tmp_path, "000001ffffffffff")
    assert cli.missing_capabilities(status=everything) == []
    only_net = _status(tmp_path, f"{(1 << 12) | (1 << 13):016x}")  # CAP_NET_ADMIN and CAP_NET_RAW
    assert cli.missing_capabilities(status=only_net) == ["CAP_SYS_ADMIN"]
    exactly = _status(tmp_path, f"{(1 << 12) | (1 << 13) | (1 << 21):016x}")
    assert cli.missing_capabilities(status=exactly) == []
    none = _status(tmp_path, "0000000000000000")
    assert cli.missing_capabilities(status=none) == ["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert cli.missing_capabilities(("CAP_NET_RAW",), status=only_net) == []


def test_unreadable_capabilities_and_unknown_names_are_errors(tmp_path):
    with pytest.raises(tcpemu.TcpemuError, match="no CapEff line"):
        cli.effective_capabilities(
            str(tmp_path / "status") if (tmp_path / "status").write_text("x\n") else ""
        )
    with pytest.raises(tcpemu.TcpemuError, match="could not read the effective capabilities"):
        cli.effective_capabilities(str(tmp_path / "absent"))
    with pytest.raises(
        tcpemu.UsageError, match="unknown capabilities \\['CAP_ROOT'\\]; known: CAP_NET_ADMIN"
    ):
        cli.missing_capabilities(("CAP_ROOT",))


# ------------------------------------------------------------- the soak's pattern


def test_the_pattern_streams_the_same_bytes_whatever_the_chunking():
    whole = pattern(7, 3, 2, "up", 5 * BLOCK + 123)
    assert len(whole) == 5 * BLOCK + 123
    for step in (1, 100, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK):
        p = Pattern(7, 3, 2, "up", len(whole))
        got = bytearray()
        while p.remaining:
            got += p.read(step)
        assert bytes(got) == whole
        checker = Pattern(7, 3, 2, "up", len(whole))
        assert all(checker.matches(whole[i : i + step]) for i in range(0, len(whole), step))
        assert checker.remaining == 0


def test_the_pattern_differs_by_seed_pair_generation_and_direction():
    base = pattern(1, 2, 3, "up", 64)
    assert (
        len(
            {
                base,
                pattern(9, 2, 3, "up", 64),
                pattern(1, 9, 3, "up", 64),
                pattern(1, 2, 9, "up", 64),
                pattern(1, 2, 3, "down", 64),
            }
        )
        == 5
    )


def test_a_wrong_byte_or_too_many_bytes_do_not_match():
    data = bytearray(pattern(1, 0, 0, "down", 3 * BLOCK))
    data[2 * BLOCK + 17] ^= 1
    checker = Pattern(1, 0, 0, "down", len(data))
    assert checker.matches(bytes(data[: 2 * BLOCK]))
    assert not checker.matches(bytes(data[2 * BLOCK :]))
    assert not Pattern(1, 0, 0, "down", 10).matches(bytes(11))


def test_the_pattern_keeps_no_block_and_not_the_stream():
    p = Pattern(0, 0, 0, "up", 64 * 2**20)
    while p.remaining:
        p.read(65536)
    assert p.offset == 64 * 2**20
    # what it holds after 64 MiB: its key and two numbers, no bytes of the stream
    held = [getattr(p, name) for name in Pattern.__slots__]
    assert not hasattr(p, "__dict__")
    assert sum(len(v) for v in held if isinstance(v, (bytes, bytearray))) < 64
    with pytest.raises(tcpemu.UsageError, match="size must be >= 0 bytes, got -1"):
        Pattern(0, 0, 0, "up", -1)


# ------------------------------------------------------------- summary and timeouts


def _result(**changes) -> SoakResult:
    base = dict(
        duration=10.0,
        connections=4,
        opened=9,
        closed=8,
        bytes_to_iut=10_000_000,
        bytes_to_emulator=5_000_000,
        mismatches=0,
        errors=(),
        retransmits_seen=3,
        retransmits_sent=2,
        faults={"out-drop": 5},
        kernel_drops=0,
        rss_after_warmup=100 * 2**20,
        rss_peak_after_warmup=101 * 2**20,
        rss_before=99 * 2**20,
    )
    return SoakResult(**{**base, **changes})


def _args(**changes) -> argparse.Namespace:
    args = cli.build_parser().parse_args(["soak", "--seed", "5", "--faults-out", "drop=0.01"])
    vars(args).update(changes)
    return args


def test_the_json_summary_is_the_result():
    summary = json.loads(json.dumps(cli._summary(_result(), _args())))
    assert summary["verdict"] == "PASS" and summary["passed"] and not summary["interrupted"]
    assert summary["seed"] == 5 and summary["faults_out"] == "drop=0.01" and summary["faults_in"] == "none"
    assert summary["mb_per_s_to_iut"] == 1.0 and summary["mb_per_s_to_emulator"] == 0.5
    assert summary["rss_before"] == 99 * 2**20 and summary["rss_growth"] == round(1 / 100, 4)
    assert summary["faults"] == {"out-drop": 5} and summary["errors"] == []
    failed = cli._summary(_result(errors=("pair 1 connection 0: x",)), _args())
    assert failed["verdict"] == "FAIL" and failed["errors"] == ["pair 1 connection 0: x"]
    stopped = cli._summary(_result(interrupted=True), _args())
    assert stopped["verdict"] == "INTERRUPTED" and not stopped["passed"]


def test_rss_is_not_judged_when_the_warm_up_did_not_end():
    line = cli._verdict_line(_result(rss_after_warmup=0, rss_peak_after_warmup=0))
    assert line.endswith(
        "RSS not judged: the warm-up (every pair's first connection) did not end within the run"
    )
    assert cli._verdict_line(_result()).endswith("RSS growth after warm-up +1.0% (100 -> 101 MiB)")


def test_an_interrupted_soak_does_not_pass():
    assert _result().passed
    assert not _result(interrupted=True).passed
    assert cli._verdict_line(_result(interrupted=True)).startswith("INTERRUPTED: 10 s, 4 pairs")


async def test_a_soak_timeout_names_the_connection_the_step_and_what_it_waited_for():
    with trio.CancelScope() as scope:
        exchange = _Exchange("pair 7 connection 3", scope, 60.0, math.inf)
        exchange.step("IUT send", "room in the IUT's send buffer (16384 of 262144 bytes sent)")
        exchange.step("emulator receive", "the IUT's data and FIN (0 of 262144 bytes received)")
        exchange.done("IUT send")
    error = exchange.timeout_error()
    assert isinstance(error, tcpemu.TcpemuTimeoutError)
    assert str(error) == (
        "pair 7 connection 3: 60 s without progress; "
        "emulator receive: waiting for the IUT's data and FIN (0 of 262144 bytes received)"
    )


async def test_each_step_pushes_the_stall_deadline_back():
    with trio.CancelScope() as scope:
        exchange = _Exchange("pair 0 connection 0", scope, 60.0, trio.current_time() + 1000)
        exchange.step("open", "x")
        first = scope.deadline
        await trio.sleep(0.01)
        exchange.step("open", "y")
        assert scope.deadline > first
        exchange.hard_deadline = trio.current_time() + 1
        exchange.done("open")
        assert scope.deadline == exchange.hard_deadline  # never beyond the exchange's bound


def test_the_emulator_window_shares_the_receive_ring_among_many_pairs():
    from tcpemu.soak import RING_BUDGET, emu_window

    assert emu_window(1) == emu_window(180) == 65535  # a full unscaled window
    assert emu_window(1000) == RING_BUDGET // 1000 and 1000 * emu_window(1000) <= RING_BUDGET
    assert emu_window(40000) == 4096  # never below
