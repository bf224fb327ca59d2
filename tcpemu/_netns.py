"""Run a function inside a named network namespace, on a short-lived thread.

setns(CLONE_NEWNET) changes only the calling thread, and a socket keeps the
namespace it was created in, so a socket made on such a thread can then be
used from anywhere (the trio thread included).  A fresh thread is used and
joined each time so that no pooled thread is left in a foreign namespace.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import TypeVar

from ._errors import LabError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/var/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def enter_netns(name: str) -> None:
    """Move the calling thread into namespace ``name``."""
    try:
        fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LabError(f"network namespace {name!r} does not exist ({netns_path(name)} missing)") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise LabError(f"setns into {name!r} failed: {os.strerror(err)}")
    finally:
        os.close(fd)


def run_in_netns(name: str | None, fn: Callable[..., T], *args: object) -> T:
    """Call ``fn(*args)`` inside namespace ``name`` (None: right here) and return its result."""
    if name is None:
        return fn(*args)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            enter_netns(name)
            box["result"] = fn(*args)
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"tcpemu-netns-{name}")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]
