"""The layer table of docs/index.md is true: no module imports one of a higher layer."""

from __future__ import annotations

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).parents[2]
PACKAGE = ROOT / "tcpemu"


def layers() -> dict[str, tuple[int, str]]:
    """module name -> (layer number, layer name), read from the table in docs/index.md."""
    table: dict[str, tuple[int, str]] = {}
    for line in (ROOT / "docs" / "index.md").read_text().splitlines():
        m = re.match(r"\| (\d+) ([a-zA-Z /]+) \| (.+?) \|", line)
        if m:
            for module in re.findall(r"`([\w.]+)`", m.group(3)):
                table[module] = (int(m.group(1)), m.group(2).strip())
    return table


def module_name(path: pathlib.Path) -> str:
    """tcpemu/_engine.py -> _engine; tcpemu/packetdrill/runner.py -> packetdrill."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def imported(path: pathlib.Path) -> set[str]:
    """The tcpemu modules ``path`` imports at run time (``if TYPE_CHECKING:`` blocks skipped)."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    inside_subpackage = path.parent != PACKAGE
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                parts = (node.module or "").split(".")
                if parts[0] == "tcpemu" and len(parts) > 1:
                    found.add(parts[1])
                elif parts == ["tcpemu"]:
                    found.update(a.name for a in node.names)
                continue
            up = node.level - (1 if inside_subpackage else 0)
            if up > 1 or (up == 0 and inside_subpackage):
                continue  # within the subpackage: one module of the table
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "tcpemu" and len(parts) > 1:
                    found.add(parts[1])
    return found


def test_every_module_is_in_the_table():
    table = layers()
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    assert modules - set(table) == set(), "modules missing from the layer table in docs/index.md"
    assert set(table) - modules == set(), "the layer table names modules that do not exist"


def upward(table: dict[str, tuple[int, str]]) -> list[str]:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        level, layer = table[name]
        for target in sorted(imported(path)):
            if target in table and table[target][0] > level:
                wrong.append(f"{path.relative_to(ROOT)} ({layer}) imports {target} ({table[target][1]})")
    return wrong


def test_no_module_imports_a_higher_layer():
    assert upward(layers()) == []


def test_the_check_sees_an_upward_import():
    """The checker itself: with the core put above the engine, the engine's imports of it are caught."""
    table = layers()
    table["core"] = (9, "front")
    wrong = upward(table)
    assert any(line.startswith("tcpemu/_engine.py (engine) imports core") for line in wrong), wrong
    assert {"core", "_io", "_connection"} <= imported(PACKAGE / "_engine.py")
    assert "_engine" not in imported(PACKAGE / "_connection.py")  # only under TYPE_CHECKING there
