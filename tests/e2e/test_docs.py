"""Every code example in the docs and the README runs, against the kernel."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
INCLUDE = re.compile(r'^--8<-- "(docs/examples/[\w.]+\.py)"$')


def python_blocks(text: str) -> list[str]:
    return [body for lang, body in FENCE.findall(text) if lang in ("python", "py", "")]


def test_docs_show_code_only_by_including_examples():
    """A Python block in the docs is an include of a file that the test below runs."""
    included = set()
    for page in (ROOT / "docs").glob("*.md"):
        text = page.read_text()
        outside_fences = FENCE.sub("", text)
        assert not re.search(r"^    (?!\|)\S.*\n    \S", outside_fences, re.MULTILINE), (
            f"{page.name}: an indented code block"
        )
        for body in python_blocks(text):
            m = INCLUDE.match(body.strip())
            assert m, f"{page.name}: a Python block that is not an included example:\n{body}"
            assert (ROOT / m.group(1)).is_file(), f"{page.name}: {m.group(1)} does not exist"
            included.add(m.group(1))
    assert included, "no examples included at all"


def test_readme_example_is_the_one_that_runs():
    blocks = python_blocks((ROOT / "README.md").read_text())
    assert len(blocks) == 1
    body = "\n".join(line for line in blocks[0].splitlines() if not line.startswith(("import ", "from ")))
    example = (ROOT / "docs" / "examples" / "readme.py").read_text()
    assert textwrap.indent(body.strip("\n"), "    ") in example


# examples that open a TUN/TAP device of their own: /dev/net/tun is the host root's
NEEDS_ROOT = {"local_mode_tun", "tap_userspace_stack"}
_TUN = "a TUN/TAP device needs /dev/net/tun, which only the host's root may open here"


@pytest.mark.e2e
@pytest.mark.parametrize(
    "example",
    [
        pytest.param(p, marks=[pytest.mark.tcpemu_needs_root(_TUN)] if p.stem in NEEDS_ROOT else [])
        for p in EXAMPLES
    ],
    ids=[p.stem for p in EXAMPLES],
)
def test_example_runs(example):
    proc = subprocess.run(
        [sys.executable, str(example)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{example.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
