"""Stock FHIR clients against a live telemon (real uvicorn on loopback, both backends): the
clients' own calls for patch, count and conditional update/delete must work unchanged.

Python: fhirpy. Node: fhir-kit-client and the Medplum client (tests/api/node_clients/, installed
with ``npm ci`` by the Makefile's test target; skipped only where node itself is missing).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import MultipleResourcesFound

from tests import factories as f

NODE_CLIENTS = Path(__file__).resolve().parent / "node_clients"


def _identifier(bsn: str) -> str:
    return f"{f.BSN}|{bsn}"


def test_fhirpy_patch_count_and_conditional_writes(live_server: str) -> None:
    client = SyncFHIRClient(live_server)
    patient = client.resource("Patient", **f.patient(f.BSNS[1]))
    patient.save()
    assert patient["id"]

    # patch(): a partial resource (merge semantics) sent as application/json
    patched = client.patch("Patient", patient["id"], gender="female")
    assert patched["gender"] == "female" and patched["meta"]["versionId"] == "2"
    patient.refresh()
    assert patient["gender"] == "female"

    # count(): _count=0 with a total
    search = client.resources("Patient").search(identifier=_identifier(f.BSNS[1]))
    assert search.count() == 1
    assert client.resources("Patient").search(identifier=_identifier(f.BSNS[2])).count() == 0

    # conditional update: creates when nothing matches, then updates the one match
    fresh = client.resource("Patient", **f.patient(f.BSNS[2], family="Nieuw"))
    target = client.resources("Patient").search(identifier=_identifier(f.BSNS[2]))
    created, was_created = target.update(fresh)
    assert was_created and created["name"][0]["family"] == "Nieuw"
    again = client.resource("Patient", **f.patient(f.BSNS[2], family="Bijgewerkt"))
    updated, was_created = target.update(again)
    assert not was_created and updated["id"] == created["id"]
    assert target.count() == 1

    # conditional patch of the one match
    conditional = target.patch(gender="female")
    assert conditional["id"] == created["id"] and conditional["gender"] == "female"

    # conditional delete: the one match goes; several matches are refused
    _, status = target.delete()
    assert status == 200 and target.count() == 0
    for _ in range(2):
        client.resource("Patient", **f.patient(f.BSNS[3])).save()
    twice = client.resources("Patient").search(identifier=_identifier(f.BSNS[3]))
    with pytest.raises(MultipleResourcesFound):
        twice.delete()
    assert twice.count() == 2


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_clients_patch(live_server: str, http: httpx.Client) -> None:
    assert (NODE_CLIENTS / "node_modules").is_dir(), "run `make test` (it runs npm ci there)"
    pid = http.post(f"{live_server}/Patient", json=f.patient(f.BSNS[1])).json()["id"]
    run = subprocess.run(
        ["node", str(NODE_CLIENTS / "patch.mjs"), live_server, pid],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads(run.stdout)
    assert report["fhirKit"]["gender"] == "female"
    assert report["medplum"]["name"][0]["family"] == "Medplum"
    stored = http.get(f"{live_server}/Patient/{pid}").json()
    assert stored["meta"]["versionId"] == "3"  # two patches, one version each
    assert stored["gender"] == "female" and stored["name"][0]["family"] == "Medplum"
