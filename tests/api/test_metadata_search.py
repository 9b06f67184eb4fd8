"""The CapabilityStatement's chains, ``_has`` and ``searchRevInclude`` are true: each one listed
is accepted with ``Prefer: handling=strict`` (nothing ignored)."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient

STRICT = {"Prefer": "handling=strict"}


def _ok(client: TestClient, res_type: str, params: dict[str, str]) -> None:
    response = client.get(f"/fhir/{res_type}", params=params, headers=STRICT)
    assert response.status_code == 200, (res_type, params, response.text)
    outcomes = [e for e in response.json().get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcomes == [], (res_type, params)


def test_listed_chains_revincludes_and_has_work(client: TestClient) -> None:
    statement: dict[str, Any] = client.get("/fhir/metadata").json()
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert "Flag:patient" in resources["Patient"]["searchRevInclude"]
    assert "Observation:patient" in resources["Patient"]["searchRevInclude"]
    assert "_has:" in resources["Patient"]["documentation"]
    chains = 0
    for entry in resources.values():
        for revinclude in entry.get("searchRevInclude", []):
            _ok(client, entry["type"], {"_revinclude": revinclude})
            _ok(client, entry["type"], {f"_has:{revinclude}:_id": "x"})
        for param in entry.get("searchParam", []):
            match = re.search(r"Chained \(one level\) to any parameter of (\w+)",
                              param["documentation"])
            if match:
                _ok(client, entry["type"], {f"{param['name']}._id": "x"})
                _ok(client, entry["type"], {f"{param['name']}:{match.group(1)}._id": "x"})
                chains += 1
    assert chains >= 10
    flag_patient = next(
        p for p in resources["Flag"]["searchParam"] if p["name"] == "patient"
    )
    assert "patient.identifier" in flag_patient["documentation"]
