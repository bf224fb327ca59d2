"""The pytest plugin at its edges, without a network: a test suite of its own run by pytester."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TRIO_MODE = "[pytest]\ntrio_mode = true\n"


def _run(pytester: pytest.Pytester, source: str, *args: str, ini: str = TRIO_MODE) -> pytest.RunResult:
    pytester.makeini(ini)
    pytester.makepyfile(test_it=source)
    # the plugin is loaded through its entry point, as in a user's project
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-ra", *args)


def test_a_single_exception_is_reported_by_its_public_name_not_as_a_group(pytester):
    result = _run(
        pytester,
        """
        import tcpemu, trio

        async def test_fails():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)
                raise tcpemu.UsageError("send_msg: window=-1 is out of range 0..65535")
        """,
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.re_match_lines(
        [
            r"E +tcpemu\.UsageError: send_msg: window=-1 is out of range 0\.\.65535",
            r"FAILED test_it\.py::test_fails - tcpemu\.UsageError: send_msg: window=-1",
        ]
    )
    assert "ExceptionGroup" not in out and "_errors" not in out


def test_two_exceptions_stay_a_group(pytester):
    result = _run(
        pytester,
        """
        import tcpemu, trio

        async def fail(text):
            raise tcpemu.TcpemuTimeoutError(text)

        async def test_fails():
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fail, "first")
                nursery.start_soon(fail, "second")
        """,
    )
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "ExceptionGroup" in out
    assert "tcpemu.TcpemuTimeoutError: first" in out and "tcpemu.TcpemuTimeoutError: second" in out


def test_a_skip_inside_a_fixture_nursery_is_still_a_skip(pytester):
    result = _run(
        pytester,
        """
        import pytest, trio

        @pytest.fixture
        async def thing():
            async with trio.open_nursery():
                pytest.skip("not here")
            yield

        async def test_skipped(thing):
            pass
        """,
    )
    result.assert_outcomes(skipped=1)


@pytest.mark.parametrize("fixture", ["tcpemu_lab", "tcpemu_engine", "tcpemu_connection"])
def test_without_trio_mode_the_error_says_what_to_set(pytester, fixture):
    result = _run(
        pytester,
        f"""
        async def test_uses_the_lab({fixture}):
            pass

        def test_sync_uses_the_lab({fixture}):
            pass
        """,
        ini="[pytest]\n",
    )
    result.assert_outcomes(errors=2)
    out = result.stdout.str()
    # the error sections, not the short summary (which repeats them untruncated when CI is set)
    errors = out.split("short test summary info")[0]
    assert errors.count(f"{fixture}: tcpemu's fixtures are async (trio)") == 2
    assert "Set trio_mode = true under [tool.pytest.ini_options] in pyproject.toml" in out


def test_the_seed_option_reaches_the_fixture_and_the_header(pytester):
    result = _run(
        pytester,
        """
        def test_seed(tcpemu_seed):
            assert tcpemu_seed == 1234
        """,
        "--tcpemu-seed",
        "1234",
    )
    result.assert_outcomes(passed=1)
    assert "tcpemu: seed 1234 (repeat a run with --tcpemu-seed 1234)" in result.stdout.str()


def test_a_random_seed_is_drawn_and_printed(pytester):
    result = _run(
        pytester,
        "def test_seed(tcpemu_seed):\n    print('SEED', tcpemu_seed)\n",
        "-s",
        "--tcpemu-seed",
        "random",
    )
    result.assert_outcomes(passed=1)
    seed = int(result.stdout.str().split("SEED ", 1)[1].split()[0])
    assert f"tcpemu: seed {seed} " in result.stdout.str()


def test_the_seed_is_printed_with_a_failure(pytester):
    result = _run(
        pytester,
        """
        def test_seed(tcpemu_seed):
            assert tcpemu_seed == 0
        """,
        "--tcpemu-seed",
        "77",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*- tcpemu seed -*", "77 (repeat with --tcpemu-seed 77)"])


@pytest.mark.parametrize("bad", ["x", "-1", str(2**64)])
def test_a_bad_seed_is_a_usage_error(pytester, bad):
    result = _run(pytester, "def test_nothing():\n    pass\n", "--tcpemu-seed", bad)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--tcpemu-seed: {bad!r} is not a seed; give a whole number 0 <= N < 2**64, or 'random'" in (
        result.stderr.str()
    )


def test_an_unknown_marker_option_names_the_allowed_ones(pytester):
    result = _run(
        pytester,
        """
        import pytest

        @pytest.mark.tcpemu(fault="drop=0.1")
        async def test_marked():
            pass
        """,
    )
    result.assert_outcomes(errors=1)
    assert (
        "tcpemu.UsageError: @pytest.mark.tcpemu: unknown option fault; allowed: faults_out, faults_in, "
        "reliable, rto, trace_depth, answer_neighbours, capture, timestamps, mss, wscale, sack, window"
    ) in result.stdout.str()


def test_bad_marker_values_are_usage_errors(pytester):
    result = _run(
        pytester,
        """
        import pytest

        @pytest.mark.tcpemu(capture="yes")
        async def test_capture():
            pass

        @pytest.mark.tcpemu(faults_in=0.1)
        async def test_faults():
            pass

        @pytest.mark.tcpemu("reliable")
        async def test_positional():
            pass
        """,
    )
    result.assert_outcomes(errors=3)
    out = result.stdout.str()
    assert "capture must be True or False, got 'yes'" in out
    assert (
        "faults_in must be a tcpemu.faults.Faults or a text such as 'drop=0.01,reorder=0.01', got 0.1" in out
    )
    assert "takes keyword arguments only, got positional ('reliable',)" in out


def test_the_marker_settings_merge_closest_first(pytester):
    result = _run(
        pytester,
        """
        import pytest
        from tcpemu.faults import Faults
        from tcpemu.pytest_plugin import _SETTINGS

        pytestmark = pytest.mark.tcpemu(reliable=True, timestamps=True, faults_out="drop=0.5")

        @pytest.mark.tcpemu(faults_out="drop=0.25", capture=False, mss=500)
        def test_marked(request):
            settings = request.node.stash[_SETTINGS]
            assert settings.engine == {"faults_out": Faults(drop=0.25), "reliable": True}
            assert settings.connection == {"timestamps": True, "mss": 500}
            assert settings.capture is False
        """,
    )
    result.assert_outcomes(passed=1)


def test_errors_show_public_names():
    import tcpemu
    from tcpemu import _errors

    for name in _errors.__all__:
        cls = getattr(_errors, name)
        assert cls.__module__ == "tcpemu" and getattr(tcpemu, name) is cls, name


MEMORY_ENGINE = """
import pytest, tcpemu

async def open_one():
    emu, _peer = tcpemu.MemoryLink.pair()
    async with tcpemu.open_engine(link=emu):
        pass

@pytest.mark.tcpemu(capture=False)
async def test_without_capture():
    await open_one()
    assert False, "fails, so that a capture would be kept"

async def test_with_capture():
    await open_one()
    assert False, "fails, so that its capture is kept"
"""


def test_capture_false_opens_engines_without_capture(pytester):
    result = _run(pytester, MEMORY_ENGINE)
    result.assert_outcomes(failed=2)
    kept = [p.name for p in (pytester.path / ".tcpemu" / "captures").iterdir()]
    assert len(kept) == 1 and "test_with_capture" in kept[0]
    assert result.stdout.str().count("- tcpemu capture -") == 1
