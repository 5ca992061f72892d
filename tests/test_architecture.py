"""The package layout is the pipeline: no module imports one in a room above its own.

Every import is read from the source text (module level and inside functions alike, since a
deferred import is still a dependency), so the layering cannot rot unnoticed.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "migrate"

RANKS = {
    "migrate": 0,  # the package itself: __version__
    "migrate.errors": 0,
    "migrate.example": 0,
    "migrate.storage": 1,
    "migrate.source": 2,
    "migrate.target": 3,
    "migrate.dest": 4,
    "migrate.copy": 5,
    "migrate.check": 6,
    "migrate.report": 7,
    "migrate.view": 7,
    "migrate.api": 8,
    "migrate.bulk": 9,
    "migrate.cli": 10,
    "migrate.__main__": 11,
}
"""Rooms from the bottom up, as the data flows: a module may import its own room and rooms
of a lower rank only."""

ONLY_FOR_THE_CLI = {"migrate.example"}
"""The example writer is not part of the migration: only the CLI's demo may use it."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def room(module: str) -> str:
    """The room of a module: the longest prefix in ``RANKS``."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in RANKS:
            return candidate
    raise AssertionError(f"{module}: in no room of the layout; add it to RANKS")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every ``migrate`` module that ``path`` imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing package
                anchor = (package or module_name(path)).split(".")
                base = ".".join(anchor[: len(anchor) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] == "migrate"]


def product_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_every_module_is_in_a_room() -> None:
    for path in product_modules():
        room(module_name(path))


def upward_imports(importer: str, imports: list[tuple[int, str]]) -> list[str]:
    """What in ``imports`` (line, module) breaks the layering for module ``importer``."""
    own = room(importer)
    upward = []
    for line, imported in imports:
        try:
            target = room(imported)
        except AssertionError:
            continue  # ``from migrate.x import name``: the name, not a module
        if target == own:
            continue
        if RANKS[target] > RANKS[own]:
            upward.append(f"line {line}: {imported} (room {target}, above {own})")
        if target in ONLY_FOR_THE_CLI and own != "migrate.cli":
            upward.append(f"line {line}: {imported} is the example writer, for the CLI only")
    return upward


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: module_name(p))
def test_no_import_climbs_up(path: Path) -> None:
    upward = upward_imports(module_name(path), imports_of(path))
    assert not upward, f"{module_name(path)} imports upward:\n" + "\n".join(upward)


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rule can fail: a deferred import of the engine in a storage module, or of the
    example writer in the engine, is caught."""
    bad = ROOT / "storage" / "_probe_for_test.py"
    try:
        bad.write_text("def f():\n    from migrate.copy.engine import run_plan\n")
        found = upward_imports(module_name(bad), imports_of(bad))
    finally:
        bad.unlink()
    assert found[0] == "line 2: migrate.copy.engine (room migrate.copy, above migrate.storage)"
    assert upward_imports("migrate.copy.engine", [(7, "migrate.example.fixture")])


def test_no_import_circle_between_modules() -> None:
    """No two modules need each other, even through a deferred import."""
    modules = {module_name(path): path for path in product_modules()}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {
            imported
            for _, imported in imports_of(path)
            if imported in modules and imported != name and not _is_package_of(imported, name)
        }
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, trail: list[str]) -> None:
        seen[node] = 1
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                cycle = [*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt]
                raise AssertionError("import circle: " + " → ".join(cycle))
            if nxt not in seen:
                visit(nxt, [*trail, nxt])
        seen[node] = 2

    for name in sorted(graph):
        if name not in seen:
            visit(name, [name])


def _is_package_of(package: str, module: str) -> bool:
    """``migrate.storage`` is the package of ``migrate.storage.s3``: importing a sibling
    through the package's ``__init__`` is not a circle of its own."""
    return module.startswith(package + ".") or package.startswith(module + ".")
