"""nox sessions: tests (unit + end to end, needs root), unit, lint, docs, bench, demo."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "docs", "tests"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and end-to-end tests.  The e2e suite must run (it fails rather than skips)."""
    session.install("-e", ".[test]")
    session.run("pytest", "--tcpemu-require-e2e", *session.posargs)


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
    session.run("ruff", "check", "tcpemu", "tests", "benchmarks", "noxfile.py")
    session.run("ruff", "format", "--check", "tcpemu", "tests", "benchmarks", "noxfile.py")
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
