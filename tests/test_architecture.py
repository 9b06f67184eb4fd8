"""The structure docs/architecture.md draws is the structure of the code.

The import rules themselves are import-linter contracts in pyproject.toml (``lint-imports`` in
``make test``); these tests hold the architecture page's table of packages and layers against
those contracts and against the packages on disk, and check what import-linter cannot see.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "service"
ROW = re.compile(r"^\| (\d+|-) \| `service/([a-z_]+)(?:\.py)?` \| .+ \|$")


def _table() -> dict[str, str]:
    """package name → its layer number (``-`` for unlayered), from docs/architecture.md."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    rows = [ROW.match(line) for line in text.splitlines()]
    return {m.group(2): m.group(1) for m in rows if m}


def _contract_layers() -> list[set[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [layers] = [
        c["layers"] for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers"
    ]
    return [{name.strip().removeprefix("service.") for name in row.split("|")} for row in layers]


def _packages_on_disk() -> set[str]:
    packages = {p.parent.name for p in SERVICE.glob("*/__init__.py")}
    modules = {p.stem for p in SERVICE.glob("*.py") if p.stem != "__init__"}
    return packages | modules


def test_the_table_names_every_package_on_disk_and_nothing_else() -> None:
    assert set(_table()) == _packages_on_disk()


def test_the_table_draws_the_layers_of_the_import_contract() -> None:
    table = _table()
    numbers = sorted({int(n) for n in table.values() if n != "-"})
    drawn = [{name for name, n in table.items() if n == str(number)} for number in numbers]
    assert drawn == _contract_layers()
    unlayered = {name for name, n in table.items() if n == "-"}
    assert not unlayered & set().union(*_contract_layers())


def test_every_package_but_storage_is_kept_from_sql() -> None:
    """The contract that keeps SQL in storage names every other package: a new package is
    covered the day it is added."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [sources] = [
        c["source_modules"]
        for c in config["tool"]["importlinter"]["contracts"]
        if c["type"] == "forbidden" and "sqlalchemy" in c["forbidden_modules"]
    ]
    assert {name.removeprefix("service.") for name in sources} == _packages_on_disk() - {"storage"}


def _imports(source: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def private_imports(source: str, where: str) -> list[str]:
    """Imports of another library's private modules or names (a leading underscore)."""
    return [
        f"{where}:{line}: {name}"
        for line, name in _imports(source)
        if not name.startswith("service")
        and any(part.startswith("_") and not part.startswith("__") for part in name.split("."))
    ]


def test_no_module_imports_another_librarys_private_parts() -> None:
    offenders = [
        hit
        for path in sorted(SERVICE.rglob("*.py"))
        for hit in private_imports(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    ]
    assert offenders == []


def test_the_private_import_check_sees_one() -> None:
    source = "import os\nfrom service import app\nfrom starlette._utils import get_route_path"
    assert private_imports(source, "x.py") == [
        "x.py:3: starlette._utils",
        "x.py:3: starlette._utils.get_route_path",
    ]
    assert private_imports("from fastapi import _compat\n", "y.py") == ["y.py:1: fastapi._compat"]
