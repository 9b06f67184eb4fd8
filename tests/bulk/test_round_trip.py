"""``$export`` → ``telemon import`` of the downloaded files into an empty database gives the same
resources.

The importer gives every resource a new id and rewrites the references between them (see
``service/bulk/importer.py``), so resources are compared with ``id`` and ``meta`` left out and every
reference replaced by the business identifier of what it points at. The files are imported in
manifest order as one NDJSON file: the export writes referenced types first, which is the order
the importer needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from typer.testing import CliRunner

from service.cli import app
from service.settings import get_settings
from service.storage.tables import metadata
from tests.bulk.conftest import Bulk, Cohort


def _key(resource: dict[str, Any]) -> str:
    ident = resource["identifier"][0]
    return f"{resource['resourceType']}:{ident['system']}|{ident['value']}"


def _canonical(resources: list[dict[str, Any]]) -> list[bytes]:
    keys = {f"{r['resourceType']}/{r['id']}": _key(r) for r in resources}

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: rewrite(v) for k, v in node.items() if k not in ("id", "meta")}
            if isinstance(out.get("reference"), str):
                out["reference"] = keys.get(out["reference"], "unresolved")
            return out
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    return sorted(orjson.dumps(rewrite(r), option=orjson.OPT_SORT_KEYS) for r in resources)


def test_export_then_import_into_an_empty_database(
    bulk: Bulk, cohort: Cohort, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = bulk.token()
    manifest = bulk.export("/fhir/$export?_type=Patient,Device,Observation", token)
    exported = bulk.lines(manifest, token)
    assert len(exported) == 18
    files = tmp_path / "downloaded.ndjson"
    with files.open("wb") as out:
        for item in manifest["output"]:
            out.write(bulk.get(item["url"], token).content)
    with bulk.db.write() as conn:  # the database is emptied; the downloaded files remain
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())

    monkeypatch.setenv("TELEMON_DATABASE_URL", database_url)
    monkeypatch.setenv("TELEMON_ALERTS_ENABLED", "false")
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["import", str(files)])
    finally:
        get_settings.cache_clear()

    assert result.exit_code == 0, result.output
    imported = bulk.fhir.search("Patient", [("_count", "100")]).matches
    imported += bulk.fhir.search("Device", [("_count", "100")]).matches
    imported += bulk.fhir.search("Observation", [("_count", "100")]).matches
    again = [orjson.loads(r.content) for r in imported]
    assert _canonical(again) == _canonical(exported)
