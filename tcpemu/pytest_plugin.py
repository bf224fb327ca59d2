"""pytest plugin (entry point ``tcpemu``): lab and engine fixtures.

Fixtures (trio tests, pytest-trio in trio mode):

- ``tcpemu_lab``: a fresh two-host :class:`~tcpemu.lab.Lab` with the IUT's
  neighbour entry for the tester pointing at the alien MAC; removed after
  the test, also when it fails.
- ``tcpemu_engine``: an engine on the lab's tester interface.

Every engine a test opens captures to pcapng under the capture directory
(``--tcpemu-capture-dir``, default ``.tcpemu/captures`` under the rootdir).
When a test fails, its report gets a section with the capture files and one
with the trace of each connection it used, and the capture is kept; a
passing test's capture is removed unless ``--tcpemu-keep-captures``.

Tests that need them need root (namespaces, raw sockets).  Without root
they are skipped with that reason, unless ``--tcpemu-require-e2e`` (or the
environment variable ``TCPEMU_REQUIRE_E2E=1``) is given: then they fail, so
that CI can never pass by skipping the end-to-end suite.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
from collections.abc import AsyncIterator, Generator

import pytest

from . import _engine
from ._engine import Engine, open_engine
from .lab import Lab, open_lab

NEED_ROOT = "needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW) for network namespaces and raw sockets"


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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end test against the Linux kernel in test-made namespaces (needs root)"
    )


def _require(config: pytest.Config) -> bool:
    return bool(config.getoption("--tcpemu-require-e2e")) or os.environ.get("TCPEMU_REQUIRE_E2E") == "1"


def _capture_root(config: pytest.Config) -> pathlib.Path:
    given = config.getoption("--tcpemu-capture-dir")
    return pathlib.Path(given) if given else config.rootpath / ".tcpemu" / "captures"


def _test_dir(item: pytest.Item) -> pathlib.Path:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid)[-150:]
    return _capture_root(item.config) / name


def pytest_runtest_setup(item: pytest.Item) -> None:
    _engine.TEST_REGISTRY = []
    _engine.CAPTURE_DIR = _test_dir(item)
    item.stash[_FAILED] = False
    if item.get_closest_marker("e2e") is not None:
        _check_privileges(item.config)


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    engines = _engine.TEST_REGISTRY or []
    if report.failed:
        item.stash[_FAILED] = True
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
        directory = _engine.CAPTURE_DIR
        _engine.TEST_REGISTRY = None
        _engine.CAPTURE_DIR = None
        if directory is not None and not keep:
            shutil.rmtree(directory, ignore_errors=True)


def _check_privileges(config: pytest.Config) -> None:
    if os.geteuid() == 0:
        return
    if _require(config):
        pytest.fail(f"end-to-end test required but cannot run: {NEED_ROOT}", pytrace=False)
    pytest.skip(NEED_ROOT)


@pytest.fixture
async def tcpemu_lab(request: pytest.FixtureRequest) -> AsyncIterator[Lab]:
    _check_privileges(request.config)
    async with open_lab() as lab:
        yield lab


@pytest.fixture
async def tcpemu_engine(tcpemu_lab: Lab) -> AsyncIterator[Engine]:
    async with open_engine(tcpemu_lab.tst.ifname, netns=tcpemu_lab.tst.netns, seed=0) as engine:
        yield engine
