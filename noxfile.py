"""nox sessions: tests (unit + end to end, needs root), unit, lint, docs, bench, demo."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True


def _compiled(session: nox.Session) -> bool:
    """Whether the installed tcpemu loaded its compiled part."""
    probe = "import tcpemu._accel as a; print('compiled part:', a.SPEEDUPS is not None)"
    out = session.run("python", "-c", probe, silent=True)
    return isinstance(out, str) and out.strip().endswith("True")


def _install_compiled(session: nox.Session) -> None:
    """tcpemu installed with its compiled part, which the tests compare with the Python path
    and must not skip.  The build (hatch_build.py) decides whether it can compile; where it
    could not, a C compiler and Python's headers are installed with apt-get (as root) and
    tcpemu is installed again."""
    session.install("-e", ".[test]")
    if _compiled(session):
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        session.error("tcpemu's compiled part was not built: its tests need gcc and python3-dev installed")
    session.run("apt-get", "update", "-qq", external=True)
    session.run("apt-get", "install", "-y", "-qq", "gcc", "libc6-dev", "python3-dev", external=True)
    session.install("-e", ".[test]")
    if not _compiled(session):
        session.error("tcpemu's compiled part was not built even with gcc and python3-dev installed")


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests.  The e2e suite must run (it fails rather than skips), and so
    must the comparison of the compiled path with the Python one; then the unit tests again
    on the Python path alone, as tcpemu runs where no compiler was at install time."""
    _install_compiled(session)
    session.run("pytest", "--tcpemu-require-e2e", *session.posargs, env={"TCPEMU_REQUIRE_SPEEDUPS": "1"})
    if not session.posargs:
        session.run("pytest", "-q", "-n", "2", "tests/unit", env={"TCPEMU_PURE_PYTHON": "1"})


@nox.session
def unit(session: nox.Session) -> None:
    """Only the tests that need no network and no privileges."""
    session.install("-e", ".[test]")
    session.run("pytest", "tests/unit", *session.posargs)


@nox.session
def fuzz(session: nox.Session) -> None:
    """The hostile-frame test at 5 million frames, and each hypothesis fuzzer with 60,000 examples."""
    session.install("-e", ".[test]")
    session.env["TCPEMU_FUZZ_FRAMES"] = "5000000"
    session.env["TCPEMU_FUZZ_EXAMPLES"] = "60000"
    session.run("pytest", "tests/unit/test_fuzz_pump.py", "tests/unit/test_wire.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # pinned: a new release may change the format or the rules
    session.run("ruff", "check", "tcpemu", "tests", "benchmarks", "noxfile.py", "hatch_build.py")
    session.run("ruff", "format", "--check", "tcpemu", "tests", "benchmarks", "noxfile.py", "hatch_build.py")
    session.run("ruff", "check", "docs/examples")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, built strict (warnings fail): site/."""
    session.install("-e", ".", "mkdocs>=1.6,<2", "mkdocs-material>=9.5,<10", "mkdocstrings[python]>=0.26")
    session.env["NO_MKDOCS_2_WARNING"] = "1"
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmarks (needs root): results in benchmarks/results/results.{json,md}."""
    session.install("-e", ".", "scapy")
    session.run("python", "benchmarks/run.py", *session.posargs)


@nox.session
def demo(session: nox.Session) -> None:
    """The seed scenario against the kernel in a throwaway lab (needs root)."""
    session.install("-e", ".")
    session.run("tcpemu", "demo", *session.posargs)
