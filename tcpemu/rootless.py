"""Labs, engines and tests without root: a user namespace the library makes.

Where the kernel lets ordinary users make user namespaces (most distributions
do; ``kernel.unprivileged_userns_clone`` or ``user.max_user_namespaces`` may
forbid it), :func:`enter` turns this process into root of a new user
namespace (the caller's uid and gid mapped to 0) with a mount namespace of
its own, in which a private tmpfs holds the named network namespaces.  The
process then has CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW over every
network namespace it makes, which is all a lab and an engine need; nothing
outside is touched, and nothing of the host's becomes reachable: the
host's interfaces, routes and neighbours stay in the host's namespaces,
which this user still cannot change.

What does not work rootless: devices that need the host's root (opening
``/dev/net/tun`` is refused unless its mode allows the user; a TUN/TAP
engine is then not possible), sysctls outside ``net.*`` of the lab's own
namespaces, and anything in the host's network namespace.

:func:`enter` must run before the process has a second thread (the kernel
refuses ``unshare(CLONE_NEWUSER)`` in a multi-threaded process), so the CLI
(``tcpemu demo --rootless``) and the pytest plugin (``--tcpemu-rootless``)
call it first thing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import threading

from ._errors import PrivilegeError
from ._netns import NETNS_RUN_DIR

__all__ = ["enter", "available", "active"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_NOSUID = 0x2
MS_NODEV = 0x4

_libc = ctypes.CDLL(None, use_errno=True)
_entered = False


def active() -> bool:
    """Whether this process entered a user namespace through :func:`enter`."""
    return _entered


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def available() -> tuple[bool, str]:
    """(True, "") if an ordinary user may make a user namespace here, else (False, why)."""
    try:
        with open("/proc/sys/user/max_user_namespaces") as f:
            if int(f.read().strip() or 0) == 0:
                return False, "user.max_user_namespaces is 0: the kernel allows no user namespaces"
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/sys/kernel/unprivileged_userns_clone") as f:
            if f.read().strip() == "0":
                return False, "kernel.unprivileged_userns_clone is 0: only root may make user namespaces"
    except OSError:
        pass  # not a Debian/Ubuntu kernel knob: nothing forbids it there
    return True, ""


def enter() -> None:
    """Become root of a new user namespace with a private mount namespace (see the module).

    Idempotent.  Raises PrivilegeError naming why when the kernel refuses,
    and RuntimeError when the process already runs a second thread.
    """
    global _entered
    if _entered:
        return
    if threading.active_count() > 1:
        raise RuntimeError(
            "tcpemu.rootless.enter() must run before any other thread starts "
            f"({threading.active_count()} threads run): the kernel refuses a user namespace then"
        )
    uid, gid = os.getuid(), os.getgid()
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        ok, why = available()
        raise PrivilegeError(
            "a user namespace was refused"
            + (f" ({why})" if not ok else f": {os.strerror(err)}")
            + "; run as root (or with CAP_SYS_ADMIN, CAP_NET_ADMIN and CAP_NET_RAW) instead"
        )
    try:
        _write("/proc/self/setgroups", "deny")  # needed before an unprivileged gid_map
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
    _write("/proc/self/uid_map", f"0 {uid} 1")
    _write("/proc/self/gid_map", f"0 {gid} 1")
    # our mount namespace's changes stay ours; named network namespaces live in a
    # tmpfs of our own, so that the host's /run/netns is neither read nor written
    if _libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        why = os.strerror(ctypes.get_errno())
        raise PrivilegeError(f"making / private in the new mount namespace: {why}")
    run_dir = NETNS_RUN_DIR.encode()
    if _libc.mount(b"tcpemu-netns", run_dir, b"tmpfs", MS_NOSUID | MS_NODEV, b"mode=0755") != 0:
        raise PrivilegeError(f"a tmpfs on {NETNS_RUN_DIR}: {os.strerror(ctypes.get_errno())}")
    _entered = True
