"""The optional compiled part of tcpemu: ``tcpemu/_speedups.c``.

It is built at install time when a C compiler and Python's headers are
there (``hatch_build.py``); without it, or with the environment variable
``TCPEMU_PURE_PYTHON=1``, everything runs in Python with the same results
(the tests run both and compare them).  It takes two things off the pump's
per-frame path: the walk of the receive ring and the plainest in-order
segment of header prediction.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Final


def _load() -> ModuleType | None:
    if os.environ.get("TCPEMU_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _speedups


SPEEDUPS: Final = _load()
"""The compiled module, or None when the Python path does everything."""
