"""pytest plugin (entry point ``tcpemu``): lab and engine fixtures.

Fixtures (trio tests, pytest-trio in trio mode):

- ``tcpemu_lab``: a fresh two-host :class:`~tcpemu.lab.Lab` with the IUT's
  neighbour entry for the tester pointing at the alien MAC; removed after
  the test, also when it fails.
- ``tcpemu_engine``: an engine on the lab's tester interface.

Tests that need them need root (namespaces, raw sockets).  Without root
they are skipped with that reason, unless ``--tcpemu-require-e2e`` (or the
environment variable ``TCPEMU_REQUIRE_E2E=1``) is given: then they fail, so
that CI can never pass by skipping the end-to-end suite.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from ._engine import Engine, open_engine
from .lab import Lab, open_lab

NEED_ROOT = "needs root (CAP_NET_ADMIN and CAP_NET_RAW) for network namespaces and raw sockets"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tcpemu")
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


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("e2e") is not None:
        _check_privileges(item.config)


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
