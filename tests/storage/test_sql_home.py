"""service/storage is the one home of SQL and of backend differences (issue 14).

import-linter keeps SQLAlchemy out of the other packages (pyproject.toml); this keeps out the
backend checks that need no import: code outside storage asks the database for a capability
(``db.serializes_writes``, ``db.notifications_supported``, ``db.embedded``), never which backend
or dialect it is.
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
STORAGE = SERVICE / "storage"
#: Attributes that name the backend rather than what it can do.
BACKEND_ATTRIBUTES = frozenset({"is_sqlite", "dialect"})


def backend_checks(source: str, filename: str) -> list[str]:
    """``file:line`` of each use of a :data:`BACKEND_ATTRIBUTES` attribute in ``source``."""
    tree = ast.parse(source, filename=filename)
    return [
        f"{filename}:{node.lineno} uses .{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in BACKEND_ATTRIBUTES
    ]


def test_the_scan_finds_backend_checks() -> None:
    source = "if db.is_sqlite:\n    pass\nname = conn.dialect.name\nok = db.embedded\n"
    assert backend_checks(source, "x.py") == ["x.py:1 uses .is_sqlite", "x.py:3 uses .dialect"]


def test_no_backend_checks_outside_storage() -> None:
    found: list[str] = []
    for path in sorted(SERVICE.rglob("*.py")):
        if path.is_relative_to(STORAGE):
            continue
        name = str(path.relative_to(SERVICE.parent))
        found += backend_checks(path.read_text(encoding="utf-8"), name)
    assert not found, "backend checks belong in service/storage:\n" + "\n".join(found)
