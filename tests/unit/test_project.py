"""Project hygiene: the README's commands are what CI runs; the public API is exported."""

from __future__ import annotations

import pathlib
import re

import tcpemu

ROOT = pathlib.Path(__file__).parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^    (python3 -m venv .+)$", text, flags=re.MULTILINE)


def test_readme_has_the_demo_and_test_commands():
    cmds = readme_commands()
    assert any(c.endswith("tcpemu demo") for c in cmds), cmds
    assert any(c.endswith("nox -s tests") for c in cmds), cmds


def test_ci_runs_the_readme_test_command_verbatim():
    test_cmd = next(c for c in readme_commands() if c.endswith("nox -s tests"))
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci


def test_public_api_is_exported():
    for name in tcpemu.__all__:
        assert hasattr(tcpemu, name), name
    assert issubclass(tcpemu.TcpemuTimeoutError, tcpemu.TcpemuError)
    assert issubclass(tcpemu.MalformedFrameError, tcpemu.TcpemuError)
