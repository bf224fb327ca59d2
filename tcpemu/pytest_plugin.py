"""pytest plugin (entry point ``tcpemu``): lab, engine and connection fixtures.

Fixtures (async: the tests run under pytest-trio, ``trio_mode = true``):

- ``tcpemu_lab``: a fresh two-host :class:`~tcpemu.lab.Lab` with the IUT's
  neighbour entry for the tester pointing at the alien MAC; removed after
  the test, also when it fails.
- ``tcpemu_engine``: an engine on the lab's tester interface, seeded with
  the session's seed and configured by the test's ``tcpemu`` marker.
- ``tcpemu_connection``: a factory of emulated connections between the
  lab's tester and IUT (the MACs, addresses and ports filled in).
- ``tcpemu_seed``: the seed of this run (``--tcpemu-seed``).

The marker ``@pytest.mark.tcpemu(...)`` configures the engine of one test
(``faults_out``, ``faults_in``, ``reliable``, ``rto``, ``trace_depth``,
``answer_neighbours``), its capture (``capture=False``: none) and the
options of the connections the factory makes (``timestamps``, ``mss``,
``wscale``, ``sack``, ``window``).

Every engine a test opens captures to pcapng under the capture directory
(``--tcpemu-capture-dir``, default ``.tcpemu/captures`` under the rootdir).
When a test fails, its report gets a section with the capture files, one
with the trace of each connection it used, and the seed; the capture is
kept.  A passing test's capture is removed unless ``--tcpemu-keep-captures``.

Tests that need them need CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW
(namespaces, raw sockets), as root has.  Without them they are skipped with
that reason, unless ``--tcpemu-require-e2e`` (or the environment variable
``TCPEMU_REQUIRE_E2E=1``) is given: then they fail, so that CI can never
pass by skipping the end-to-end suite.

A test's failure that pytest-trio wraps in an exception group of one
exception is reported as that exception.  See docs/pytest.md.
"""

from __future__ import annotations

import os
import pathlib
import random
import re
import shutil
from collections.abc import AsyncIterator, Callable, Generator, Mapping
from contextvars import Token
from dataclasses import dataclass, field
from typing import Any

import pytest

from . import rootless
from ._engine import ENGINE_CONTEXT, Connection, Engine, EngineContext
from ._errors import TcpemuError, UsageError
from ._open import open_engine
from .cli import privilege_problem
from .core import CLIENT, SERVER, Mode
from .faults import Faults
from .lab import Lab, open_lab

FIXTURES = ("tcpemu_lab", "tcpemu_engine", "tcpemu_connection")
"""The plugin's async fixtures: a test using one must run under pytest-trio."""

ENGINE_OPTIONS = ("faults_out", "faults_in", "reliable", "rto", "trace_depth", "answer_neighbours")
CONNECTION_OPTIONS = ("timestamps", "mss", "wscale", "sack", "window")
MARKER_OPTIONS = (*ENGINE_OPTIONS, "capture", *CONNECTION_OPTIONS)

FIRST_PORT = 20000
"""The emulator's first local port for connections the factory makes (then 20001, ...)."""

NOT_TRIO = (
    "{names}: tcpemu's fixtures are async (trio): the test must be an 'async def' run by pytest-trio. "
    "Set trio_mode = true under [tool.pytest.ini_options] in pyproject.toml (or under [pytest] in "
    "pytest.ini), or mark the test @pytest.mark.trio."
)
NO_PYTEST_TRIO = (
    "{names}: tcpemu's fixtures are async (trio) and need the pytest-trio plugin: "
    "pip install pytest-trio, then set trio_mode = true under [tool.pytest.ini_options] in pyproject.toml."
)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tcpemu")
    group.addoption(
        "--tcpemu-capture-dir",
        default=None,
        help="where engines write their pcapng captures (default: <rootdir>/.tcpemu/captures)",
    )
    group.addoption(
        "--tcpemu-keep-captures",
        action="store_true",
        default=False,
        help="keep the captures of passing tests too",
    )
    group.addoption(
        "--tcpemu-require-e2e",
        action="store_true",
        default=False,
        help="fail (instead of skip) end-to-end tests when they cannot run here",
    )
    group.addoption(
        "--tcpemu-seed",
        default="0",
        metavar="N",
        help="seed of the engines' ISNs and faults and of the labs' names and MACs: a whole number "
        "0 <= N < 2**64, or 'random' to draw one (printed in the header and with every failure); default 0",
    )
    group.addoption(
        "--tcpemu-rootless",
        action="store_true",
        default=False,
        help="run as an ordinary user: tcpemu makes a user namespace (and a mount namespace for the "
        "labs' names) before any test; tests marked tcpemu_needs_root are skipped, saying why",
    )


_SEED = pytest.StashKey[int]()
_SETTINGS = pytest.StashKey["_Settings"]()
_TOKEN = pytest.StashKey[Token[EngineContext | None]]()
_CONTEXT = pytest.StashKey[EngineContext]()
_FAILED = pytest.StashKey[bool]()


def _parse_seed(text: str) -> int:
    if text.strip().lower() == "random":
        return random.SystemRandom().getrandbits(32)
    try:
        seed = int(text, 0)
    except ValueError:
        seed = -1
    if not 0 <= seed < 2**64:
        raise pytest.UsageError(
            f"--tcpemu-seed: {text!r} is not a seed; give a whole number 0 <= N < 2**64, or 'random'"
        )
    return seed


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against the Linux kernel in test-made namespaces (needs root)"
    )
    config.addinivalue_line(
        "markers",
        "tcpemu(**options): configure the test's tcpemu engine (faults_out, faults_in, reliable, rto, "
        "trace_depth, answer_neighbours), its capture (capture=False: none) and the connections of "
        "tcpemu_connection (timestamps, mss, wscale, sack, window)",
    )
    config.addinivalue_line(
        "markers",
        "tcpemu_needs_root(reason): the test needs the host's root (a device of the host, the host's "
        "namespace); skipped with that reason under --tcpemu-rootless",
    )
    config.stash[_SEED] = _parse_seed(config.getoption("--tcpemu-seed"))
    if config.getoption("--tcpemu-rootless"):
        try:
            rootless.enter()  # first: pytest has started no thread yet
        except (TcpemuError, RuntimeError) as exc:
            raise pytest.UsageError(f"--tcpemu-rootless: {exc}") from None


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SEED]
    return f"tcpemu: seed {seed} (repeat a run with --tcpemu-seed {seed})"


def _require(config: pytest.Config) -> bool:
    return bool(config.getoption("--tcpemu-require-e2e")) or os.environ.get("TCPEMU_REQUIRE_E2E") == "1"


def _capture_root(config: pytest.Config) -> pathlib.Path:
    given = config.getoption("--tcpemu-capture-dir")
    return pathlib.Path(given) if given else config.rootpath / ".tcpemu" / "captures"


def _test_dir(item: pytest.Item) -> pathlib.Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
    return _capture_root(item.config) / name


@dataclass(frozen=True)
class _Settings:
    """What the ``tcpemu`` markers of one test ask for."""

    engine: Mapping[str, Any] = field(default_factory=dict)
    connection: Mapping[str, Any] = field(default_factory=dict)
    capture: bool = True


def _settings(item: pytest.Item) -> _Settings:
    """The test's ``tcpemu`` markers merged, the closest one winning for each option."""
    options: dict[str, Any] = {}
    for marker in item.iter_markers("tcpemu"):
        if marker.args:
            raise UsageError(
                f"@pytest.mark.tcpemu takes keyword arguments only, got positional {marker.args!r}; "
                f"allowed: {', '.join(MARKER_OPTIONS)}"
            )
        for key, value in marker.kwargs.items():
            options.setdefault(key, value)
    unknown = sorted(set(options) - set(MARKER_OPTIONS))
    if unknown:
        raise UsageError(
            f"@pytest.mark.tcpemu: unknown option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: {', '.join(MARKER_OPTIONS)}"
        )
    engine = {k: options[k] for k in ENGINE_OPTIONS if k in options}
    for key in ("faults_out", "faults_in"):
        value = engine.get(key)
        if isinstance(value, str):
            engine[key] = Faults.parse(value)
        elif value is not None and not isinstance(value, Faults):
            raise UsageError(
                f"@pytest.mark.tcpemu: {key} must be a tcpemu.faults.Faults or a text such as "
                f"'drop=0.01,reorder=0.01', got {value!r}"
            )
    capture = options.get("capture", True)
    if not isinstance(capture, bool):
        raise UsageError(f"@pytest.mark.tcpemu: capture must be True or False, got {capture!r}")
    return _Settings(
        engine=engine,
        connection={k: options[k] for k in CONNECTION_OPTIONS if k in options},
        capture=capture,
    )


def _check_trio(item: pytest.Item) -> None:
    """A clear word, instead of pytest's generic async-fixture error, when pytest-trio is not on."""
    fixturenames = getattr(item, "fixturenames", ())
    used = [name for name in FIXTURES if name in fixturenames]
    if not used or item.get_closest_marker("trio") is not None:
        return
    names = ", ".join(used)
    if not item.config.pluginmanager.hasplugin("trio"):
        pytest.fail(NO_PYTEST_TRIO.format(names=names), pytrace=False)
    pytest.fail(NOT_TRIO.format(names=names), pytrace=False)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    item.stash[_FAILED] = False
    needs_root = item.get_closest_marker("tcpemu_needs_root")
    if needs_root is not None and rootless.active():
        reason = needs_root.args[0] if needs_root.args else "it needs the host's root"
        pytest.skip(f"rootless run (--tcpemu-rootless): {reason}")
    _check_trio(item)
    settings = _settings(item)
    item.stash[_SETTINGS] = settings
    # trio.run copies this thread's context, so every task of the test sees it
    context = EngineContext([], _test_dir(item) if settings.capture else None)
    item.stash[_CONTEXT] = context
    item.stash[_TOKEN] = ENGINE_CONTEXT.set(context)
    if item.get_closest_marker("e2e") is not None:
        _check_privileges(item.config)


def _single_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (however deeply nested), or None if there are more."""
    leaves: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        exc = todo.pop()
        if isinstance(exc, BaseExceptionGroup):
            todo.extend(exc.exceptions)
        else:
            leaves.append(exc)
        if len(leaves) > 1:
            return None
    return leaves[0] if leaves else None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    if call.excinfo is not None and isinstance(call.excinfo.value, BaseExceptionGroup):
        # pytest-trio hands on the nursery's group; the test raised the one inside
        leaf = _single_leaf(call.excinfo.value)
        if leaf is not None:
            call.excinfo = pytest.ExceptionInfo.from_exception(leaf)
    report: pytest.TestReport = yield
    context = item.stash.get(_CONTEXT, None)
    engines = context.registry if context is not None else []
    if report.failed:
        item.stash[_FAILED] = True
        if any(name in getattr(item, "fixturenames", ()) for name in (*FIXTURES, "tcpemu_seed")):
            seed = item.config.stash[_SEED]
            report.sections.append(("tcpemu seed", f"{seed} (repeat with --tcpemu-seed {seed})"))
        files = []
        for engine in engines:
            if engine.capture is not None:
                engine.capture.flush()
                files += [str(f) for f in engine.capture.files]
        if files:
            report.sections.append(("tcpemu capture", "\n".join(files)))
        for engine in engines:
            for conn in engine.recent:
                lines = conn.trace()
                if lines:
                    (lip, lport), (rip, rport) = conn.local, conn.remote
                    title = f"tcpemu trace {conn.label.strip()} {lip}:{lport} <-> {rip}:{rport}"
                    report.sections.append((title, "\n".join(lines)))
    if call.when == "teardown":
        keep = item.stash.get(_FAILED, False) or item.config.getoption("--tcpemu-keep-captures")
        token = item.stash.get(_TOKEN, None)
        if token is not None:
            ENGINE_CONTEXT.reset(token)
            del item.stash[_TOKEN]
        directory = context.capture_dir if context is not None else None
        if directory is not None and not keep:
            shutil.rmtree(directory, ignore_errors=True)
    return report


def _check_privileges(config: pytest.Config) -> None:
    problem = privilege_problem("this test")
    if problem is None:
        return
    if _require(config):
        pytest.fail(f"end-to-end test required but cannot run: {problem}", pytrace=False)
    pytest.skip(problem)


@pytest.fixture
def tcpemu_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this run: ``--tcpemu-seed`` (default 0), printed with every failure."""
    return request.config.stash[_SEED]


@pytest.fixture
async def tcpemu_lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    _check_privileges(request.config)
    async with open_lab(rng=random.Random(request.config.stash[_SEED])) as lab:
        yield lab


@pytest.fixture
async def tcpemu_engine(tcpemu_lab: Lab, request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    settings = request.node.stash.get(_SETTINGS, _Settings())
    async with open_engine(
        tcpemu_lab.tst.ifname,
        netns=tcpemu_lab.tst.netns,
        seed=request.config.stash[_SEED],
        **settings.engine,
    ) as engine:
        yield engine


ConnectionFactory = Callable[..., Connection]


@pytest.fixture
async def tcpemu_connection(
    tcpemu_lab: Lab, tcpemu_engine: Engine, request: pytest.FixtureRequest
) -> ConnectionFactory:
    """``tcpemu_connection(mode=SERVER, *, local_port=None, remote_port=None, ipv=4, **options)``:
    an emulated connection on ``tcpemu_engine`` between the lab's tester (alien MAC) and its IUT.

    ``local_port`` None takes the next of 20000, 20001, ...; a CLIENT needs
    ``remote_port`` (the IUT's listening port), a SERVER may leave it None
    (the IUT's SYN binds it).  ``options`` go to :meth:`Engine.connection`
    over those of the test's ``tcpemu`` marker.
    """
    settings = request.node.stash.get(_SETTINGS, _Settings())
    lab, engine = tcpemu_lab, tcpemu_engine
    next_port = iter(range(FIRST_PORT, 65536))

    def make(
        mode: Mode = SERVER,
        *,
        local_port: int | None = None,
        remote_port: int | None = None,
        ipv: int = 4,
        **options: Any,
    ) -> Connection:
        if mode not in (SERVER, CLIENT):
            raise UsageError(f"tcpemu_connection: mode must be tcpemu.SERVER or tcpemu.CLIENT, got {mode!r}")
        if ipv not in (4, 6):
            raise UsageError(f"tcpemu_connection: ipv must be 4 or 6, got {ipv!r}")
        if mode is CLIENT and remote_port is None:
            raise UsageError(
                "tcpemu_connection: a CLIENT connection needs remote_port (the IUT's listening port)"
            )
        for key in ("local", "remote", "local_mac", "remote_mac"):
            if key in options:
                raise UsageError(
                    f"tcpemu_connection: {key} is filled in from the lab; use engine.connection() "
                    "for other addresses"
                )
        port = next(next_port) if local_port is None else local_port
        return engine.connection(
            mode,
            local=(str(lab.tst.address(ipv)), port),
            remote=(str(lab.iut.address(ipv)), remote_port),
            local_mac=lab.alien_mac,
            remote_mac=lab.iut.mac,
            **{**settings.connection, **options},
        )

    return make
