"""The optional compiled part of tcpemu: ``tcpemu/_speedups.c``.

It is built at install time when a C compiler and Python's headers are
there (``hatch_build.py``); without it, or with the environment variable
``TCPEMU_PURE_PYTHON=1``, everything runs in Python with the same results
(the tests run both and compare them).  It takes two things off the pump's
per-frame path: the walk of the receive ring and the plainest in-order
segment of header prediction.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import warnings
from types import ModuleType
from typing import Final


def _load() -> ModuleType | None:
    if os.environ.get("TCPEMU_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from . import _speedups  # type: ignore[attr-defined]
    except ImportError:
        return None
    source = pathlib.Path(__file__).with_name("_speedups.c")
    if source.exists() and hashlib.sha256(source.read_bytes()).hexdigest() != _speedups.SOURCE_SHA256:
        # built from another version of its source (an editable install not reinstalled):
        # its results could differ from the Python path's, so it is not used
        warnings.warn(
            f"tcpemu: {_speedups.__file__} was built from another version of {source.name}; "
            "the pump runs in Python until tcpemu is installed again (pip install -e .)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return _speedups


SPEEDUPS: Final = _load()
"""The compiled module, or None when the Python path does everything."""
