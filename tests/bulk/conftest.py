"""Bulk access tests: an oauth-mode app whose export worker the test drives, and three patients
(A in the heart-failure programme, B in COPD, C in none) with data."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import clients
from service.bulk.jobs import BulkExports
from service.bulk.worker import ExportWorker
from service.fhir.service import FhirService
from service.settings import Settings
from service.storage.db import Database
from tests.auth.conftest import REDIRECT, backend_token, make_backend, pgo_token, register
from tests.factories import BSNS, PROGRAMME, device, heart_rate, patient, weight, when

PROFILES = Path(__file__).resolve().parents[2] / "fhir_profiles"
ALL = "system/*.rs"


@dataclass
class Cohort:
    """Three patients and what belongs to each."""

    a: str
    b: str
    c: str
    bsn: dict[str, str]
    owned: dict[str, set[str]] = field(default_factory=dict)  # patient → "Type/id" of its data


@dataclass
class Bulk:
    """The app, its export machinery and token helpers."""

    http: TestClient
    fhir: FhirService
    exports: BulkExports
    worker: ExportWorker
    db: Database
    export_dir: Path

    def token(self, scope: str = ALL, client_id: str | None = None) -> str:
        """A backend-service token with ``scope`` (a new client unless ``client_id``)."""
        backend = make_backend(self.db, scope, client_id=client_id)
        response = backend_token(self.http, backend, scope)
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token

    def patient_token(self, bsn: str) -> str:
        """A PGO token for the patient with ``bsn`` (Patient, Observation, Flag)."""
        client, secret = clients.new_pgo(f"pgo-{bsn}.example.org", "PGO", [REDIRECT])
        register(self.db, client)
        body = pgo_token(
            self.http,
            (client.client_id, secret),
            bsn,
            scope="launch/patient patient/Patient.rs patient/Observation.rs patient/Device.rs",
        )
        return str(body["access_token"])

    def get(self, url: str, token: str, **headers: str) -> Any:
        """GET with a bearer token (an absolute URL from a manifest or Content-Location)."""
        return self.http.get(url, headers={"Authorization": f"Bearer {token}", **headers})

    def kickoff(self, path: str, token: str, **headers: str) -> Any:
        """An export kick-off."""
        return self.get(
            path,
            token,
            **{"Prefer": "respond-async", "Accept": "application/fhir+json", **headers},
        )

    def work(self) -> None:
        """Let the worker write every queued job."""
        while self.worker.run_once("test-worker"):
            pass

    def export(self, path: str, token: str) -> dict[str, Any]:
        """Kick off, write, poll: the manifest."""
        started = self.kickoff(path, token)
        assert started.status_code == 202, started.text
        self.work()
        status = self.get(started.headers["Content-Location"], token)
        assert status.status_code == 200, status.text
        manifest: dict[str, Any] = status.json()
        return manifest

    def lines(self, manifest: dict[str, Any], token: str, kind: str = "output") -> list[Any]:
        """Every resource of the manifest's files of ``kind``, downloaded."""
        out = []
        for item in manifest[kind]:
            response = self.get(item["url"], token)
            assert response.status_code == 200, response.text
            out += [line for line in response.text.splitlines() if line]
        return [orjson.loads(line) for line in out]


def bulk_settings(database_url: str, export_dir: Path, **extra: Any) -> Settings:
    """oauth-mode settings whose exports go to ``export_dir``, written only when the test says."""
    return Settings(
        database_url=database_url,
        auth="oauth",
        base_url="http://testserver/fhir",
        profiles_dir=PROFILES,
        alerts_enabled=False,
        export_dir=export_dir,
        export_worker="off",
        **extra,
    )


@pytest.fixture
def bulk(database_url: str, tmp_path: Path) -> Iterator[Bulk]:
    """The app in oauth mode, exports into ``tmp_path/exports``."""
    settings = bulk_settings(database_url, tmp_path / "exports")
    app = create_app(settings)
    with TestClient(app, base_url="http://testserver") as http:
        exports: BulkExports = app.state.exports
        db = Database(database_url)
        yield Bulk(http, exports.fhir, exports, ExportWorker(exports), db, tmp_path / "exports")
        db.dispose()


def _enrol(fhir: FhirService, patient_id: str, programme: str) -> str:
    plan = {
        "resourceType": "CarePlan",
        "status": "active",
        "intent": "plan",
        "subject": {"reference": f"Patient/{patient_id}"},
        "instantiatesCanonical": [PROGRAMME[programme]],
    }
    return fhir.create(plan).res_id


@pytest.fixture
def cohort(bulk: Bulk) -> Cohort:
    """A (heart failure), B (COPD) and C (not enrolled), each with a device and measurements."""
    fhir = bulk.fhir
    ids = {}
    owned: dict[str, set[str]] = {}
    for name, bsn in zip("abc", BSNS[:3], strict=True):
        pid = fhir.create(patient(bsn, family=f"Patient-{name}")).res_id
        ids[name] = pid
        dev = fhir.create(device(pid)).res_id
        obs = [fhir.create(weight(pid, 80 + d, when(d))).res_id for d in range(3)]
        obs.append(fhir.create(heart_rate(pid, 70, when(1))).res_id)
        owned[pid] = {f"Patient/{pid}", f"Device/{dev}", *(f"Observation/{o}" for o in obs)}
    owned[ids["a"]].add(f"CarePlan/{_enrol(fhir, ids['a'], 'HF')}")
    owned[ids["b"]].add(f"CarePlan/{_enrol(fhir, ids['b'], 'COPD')}")
    return Cohort(
        ids["a"], ids["b"], ids["c"], dict(zip(ids.values(), BSNS[:3], strict=True)), owned
    )


def wait_for(predicate: Any, seconds: float = 20.0) -> None:
    """Poll until ``predicate()`` is true."""
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
