"""Build hook: compile tcpemu/_speedups.c (the pump's optional compiled part) when
a C compiler and Python's headers are there.

Without them, or with TCPEMU_PURE_PYTHON=1 in the environment, the wheel is pure
Python and tcpemu runs its Python path, with the same results.  The build never
fails for want of a compiler: it says why the compiled part was left out.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


def _compiler() -> str | None:
    for name in (
        os.environ.get("CC", ""),
        str(sysconfig.get_config_var("CC") or "").split(" ")[0],
        "cc",
        "gcc",
    ):
        if name and shutil.which(name):
            return name
    return None


class SpeedupsBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        if os.environ.get("TCPEMU_PURE_PYTHON", "") not in ("", "0"):
            self._note("TCPEMU_PURE_PYTHON is set: tcpemu._speedups not built, the pump runs in Python")
            return
        source = Path(self.root) / "tcpemu" / "_speedups.c"
        target = source.with_name("_speedups" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        include = Path(sysconfig.get_paths()["include"])
        cc = _compiler()
        if cc is None:
            self._note("no C compiler (cc, gcc or $CC): tcpemu._speedups not built, the pump runs in Python")
            return
        if not (include / "Python.h").exists():
            self._note(f"no Python.h in {include} (python3-dev): tcpemu._speedups not built")
            return
        # the source's digest goes into the module: tcpemu refuses a build older than its source
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        # in the tree, next to the source: an editable install imports it from there
        command = [cc, "-O2", "-shared", "-fPIC", "-fno-strict-aliasing", f"-I{include}"]
        command += [f'-DTCPEMU_SOURCE_SHA256="{digest}"', str(source), "-o", str(target)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            self._note(f"{' '.join(command)} failed, tcpemu._speedups not built:\n{result.stderr}")
            target.unlink(missing_ok=True)
            return
        build_data["artifacts"].append(f"tcpemu/{target.name}")  # ignored by git, in the wheel all the same
        build_data["pure_python"] = False
        build_data["infer_tag"] = True

    def _note(self, text: str) -> None:
        print(f"tcpemu build: {text}", file=sys.stderr)
