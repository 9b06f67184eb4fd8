"""The API guides in ``docs/api/`` are true: every HTTP example is sent to telemon (oauth mode,
with the demo data) and every documented answer is checked against the real one.

How a guide is read:

* A fenced ``http`` block whose first line is ``METHOD /path`` is a request; lines indented
  under it continue the request line (long queries are wrapped for reading), then come header
  lines, a blank line and the body. A form body (``application/x-www-form-urlencoded``) is
  shown unencoded and encoded here.
* A fenced ``http`` block whose first line is ``HTTP/1.1 <status>`` is the answer to the request
  before it: the status must match, every header shown must be there, and a JSON body must be
  contained in the real one — an object needs only the members shown, each array item shown
  must match some real item, and ``…`` inside a string matches any text.
* ``{name}`` placeholders: in a request they must be known (from the scenario, or bound
  earlier); in an answer a known one must match, and an unknown one is bound to what the real
  answer has there (``Location: …/Device/{device}/_history/1`` binds ``{device}``).
* In a request body, the member ``"…": "as read"`` stands for the other elements of the
  resource as last read from that path, and the array item ``"… as read"`` for its items.
* A ``GET /oauth/authorize`` answered with the login page is followed, like a patient's browser,
  by the simulated DigiD login (``{bsn}``) and consent; the code sent back is ``{code}``. When
  the app asks for ``offline_access`` the patient consents long-term (indefinitely), else for
  this once.
* The guides' ``telemon clients add-backend`` / ``add-pgo`` commands are the registrations.
"""

from __future__ import annotations

import base64
import html
import json
import re
import secrets
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

import pytest
from fastapi.testclient import TestClient
from joserfc.jwk import ECKey

from service.app import create_app
from service.auth import clients
from service.bulk.worker import ExportWorker
from service.demo import data as demo
from service.demo.clients import BACKEND_SCOPE, client_assertion
from service.demo.guide import pkce_challenge
from service.settings import Settings
from service.storage.db import Database
from tests.clock import NOW, PinnedClock

GUIDES = Path(__file__).resolve().parent.parent / "docs" / "api"
SERVER = "https://telemon.example.org"
ANY = "…"
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9-]*)\}")
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_FIELDS = re.compile(r'name="(tx|csrf_token)" value="([^"]*)"')


@dataclass
class Request:
    """One documented request."""

    method: str
    target: str
    headers: dict[str, str]
    body: str


@dataclass
class Answer:
    """One documented answer."""

    status: int
    headers: dict[str, str]
    body: str


def examples(text: str) -> list[Request | Answer]:
    """The requests and answers of a guide, in order."""
    found: list[Request | Answer] = []
    for lang, block in _BLOCK.findall(text):
        if lang != "http":
            continue
        head, _, body = block.partition("\n\n")
        lines = head.splitlines()
        first = lines.pop(0)
        while lines and lines[0][:1].isspace():
            first += lines.pop(0).strip()
        headers = dict(line.split(": ", 1) for line in lines)
        if first.startswith("HTTP/1.1 "):
            found.append(Answer(int(first.split()[1]), headers, body.strip()))
        else:
            method, target = first.split(" ")
            found.append(Request(method, target, headers, body.strip()))
    return found


def commands(text: str, name: str) -> list[dict[str, str]]:
    """The options of every ``telemon clients <name>`` command in a guide's shell blocks."""
    found = []
    for lang, block in _BLOCK.findall(text):
        if lang != "sh":
            continue
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            words = shlex.split(line, comments=True)
            if words[:3] == ["telemon", "clients", name]:
                found.append(dict(zip(words[3::2], words[4::2], strict=True)))
    return found


Bindings = dict[str, str]


def _pattern(doc: str, known: Bindings) -> re.Pattern[str]:
    """``doc`` as a regex: ``…`` any text, known placeholders literally, unknown ones bound."""
    parts = []
    bound: set[str] = set()
    for index, piece in enumerate(re.split(r"(\{[a-z][a-z0-9-]*\}|…)", doc)):
        if index % 2 == 0:
            parts.append(re.escape(piece))
        elif piece == ANY:
            parts.append(".*?")
        else:
            name = piece[1:-1]
            if name in known:
                parts.append(re.escape(known[name]))
            elif name in bound:
                parts.append(f"(?P={name.replace('-', '_')})")
            else:
                bound.add(name)
                parts.append(f'(?P<{name.replace("-", "_")}>[^/"|&?]+?)')
    return re.compile("".join(parts), re.DOTALL)


def match(doc: Any, real: Any, known: Bindings) -> Bindings | None:
    """The placeholders bound when ``doc`` is contained in ``real``; None when it is not."""
    if isinstance(doc, dict):
        if not isinstance(real, dict):
            return None
        bound: Bindings = {}
        for key, value in doc.items():
            if key not in real:
                return None
            more = match(value, real[key], {**known, **bound})
            if more is None:
                return None
            bound |= more
        return bound
    if isinstance(doc, list):
        if not isinstance(real, list):
            return None
        bound = {}
        for item in doc:
            for candidate in real:
                more = match(item, candidate, {**known, **bound})
                if more is not None:
                    bound |= more
                    break
            else:
                return None
        return bound
    if isinstance(doc, str) and isinstance(real, str):
        found = _pattern(doc, known).fullmatch(real)
        if found is None:
            return None
        return {k.replace("_", "-"): v for k, v in found.groupdict().items()}
    return {} if doc == real else None


def as_read(doc: Any, read: Any) -> Any:
    """Expand ``"…": "as read"`` members and ``"… as read"`` items from the resource read."""
    if isinstance(doc, dict):
        base = {k: v for k, v in read.items() if k != "meta"} if doc.get(ANY) == "as read" else {}
        for key, value in doc.items():
            if key != ANY:
                base[key] = as_read(value, read.get(key) if isinstance(read, dict) else None)
        return base
    if isinstance(doc, list):
        items: list[Any] = []
        for item in doc:
            items += list(read or []) if item == f"{ANY} as read" else [as_read(item, None)]
        return items
    return doc


@dataclass
class Scenario:
    """The server, what is known, and what happened so far while running one guide."""

    http: TestClient
    known: dict[str, str | Callable[[], str]]
    reads: dict[str, Any] = field(default_factory=dict)

    def value(self, name: str) -> str:
        """A known placeholder's value (fresh each time for generated ones)."""
        if name not in self.known:
            raise AssertionError(f"the guide uses {{{name}}} before it is known")
        value = self.known[name]
        return value() if callable(value) else value

    def fill(self, text: str) -> str:
        """``text`` with every placeholder replaced."""
        return _PLACEHOLDER.sub(lambda m: self.value(m[1]), text)

    def send(self, request: Request) -> Any:
        """Send a documented request; the response."""
        target = self.fill(request.target)
        headers = {k: self.fill(v) for k, v in request.headers.items()}
        body = self.fill(request.body)
        media = headers.get("Content-Type", "")
        content: bytes | None = None
        if media.startswith("application/x-www-form-urlencoded"):
            content = urlencode(parse_qsl(body, keep_blank_values=True)).encode()
        elif body:
            data = json.loads(body)
            path = urlsplit(target).path
            if path in self.reads:
                data = as_read(data, self.reads[path])
            content = json.dumps(data).encode()
        response = self.http.request(
            request.method, target, headers=headers, content=content, follow_redirects=False
        )
        if request.method == "GET" and response.headers.get("content-type", "").startswith(
            "application/fhir+json"
        ):
            self.reads[urlsplit(target).path] = response.json()
        if urlsplit(target).path == "/oauth/authorize" and response.status_code == 200:
            self.known["code"] = self.log_in(response.text, parse_qs(urlsplit(target).query))
        return response

    def log_in(self, page: str, query: dict[str, list[str]]) -> str:
        """The patient logs in (simulated DigiD) and allows; the code sent back."""
        fields = {k: html.unescape(v) for k, v in _FIELDS.findall(page)}
        consent = self.http.post("/oauth/login", data={**fields, "bsn": self.value("bsn")})
        assert consent.status_code == 200, consent.text
        fields = {k: html.unescape(v) for k, v in _FIELDS.findall(consent.text)}
        long_term = "offline_access" in query.get("scope", [""])[0].split()
        term = {"term": "indefinite" if long_term else "once"}
        back = self.http.post(
            "/oauth/consent",
            data={**fields, **term, "decision": "allow"},
            follow_redirects=False,
        )
        location = urlsplit(back.headers["location"])
        assert f"{location.scheme}://{location.netloc}{location.path}" == query["redirect_uri"][0]
        answer = parse_qs(location.query)
        assert answer["state"] == query["state"]
        return answer["code"][0]

    def check(self, answer: Answer, response: Any, where: str) -> None:
        """The documented answer against the real one; binds new placeholders."""
        known = {k: v for k, v in self.known.items() if isinstance(v, str)}
        assert response.status_code == answer.status, f"{where}: {response.text[:2000]}"
        for name, value in answer.headers.items():
            real = response.headers.get(name)
            assert real is not None, f"{where}: no {name} header"
            bound = match(value, real, known)
            assert bound is not None, f"{where}: {name}: {real!r} is not {value!r}"
            self.known.update(bound)
            known |= bound
        if answer.body:
            bound = match(json.loads(answer.body), response.json(), known)
            assert bound is not None, f"{where}: {json.dumps(response.json())[:3000]}"
            self.known.update(bound)


def run_guide(name: str, scenario: Scenario) -> int:
    """Send every request of ``docs/api/<name>`` and check every answer; how many were sent."""
    sent = 0
    response = None
    last_request = ""
    for example in examples((GUIDES / name).read_text()):
        if isinstance(example, Request):
            response = scenario.send(example)
            last_request = f"{name}: {example.method} {example.target}"
            sent += 1
        else:
            assert response is not None, f"{name}: an answer without a request"
            scenario.check(example, response, last_request)
    return sent


@dataclass
class World:
    """The demo data on an oauth-mode server, and the ids the guides refer to."""

    http: TestClient
    db: Database
    hf: demo.DemoPatient
    copd: demo.DemoPatient
    both: demo.DemoPatient
    flag: str


@contextmanager
def _world(database_url: str, **settings: Any) -> Iterator[World]:
    """telemon in oauth mode at https://telemon.example.org, with the demo loaded."""
    config = Settings(
        database_url=database_url,
        auth="oauth",
        base_url=f"{SERVER}/fhir",
        profiles_dir=Path(__file__).resolve().parent.parent / "fhir_profiles",
        **settings,
    )
    with TestClient(create_app(config, clock=PinnedClock(NOW)), base_url=SERVER) as http:
        fhir = http.app.state.telemon.fhir  # type: ignore[attr-defined]
        summary = demo.load_demo(fhir, weeks=6)
        hf, copd, both = summary.patients
        flags = fhir.search("Flag", [("patient", hf.patient_id), ("code", "HF-WT-3D")])
        db = Database(database_url)
        yield World(http, db, hf, copd, both, flags.matches[0].res_id)
        db.dispose()


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    """telemon in oauth mode at https://telemon.example.org, with the demo loaded."""
    with _world(database_url) as w:
        yield w


def _backend(world: World, guide: str) -> Callable[[], str]:
    """Register the guide's backend client; a maker of fresh client assertions for it."""
    (options,) = commands((GUIDES / guide).read_text(), "add-backend")
    key = ECKey.generate_key("P-384", private=True)
    key.ensure_kid()
    jwks = {"keys": [key.as_dict(private=False)]}
    client_id = options["--client-id"]
    with world.db.write() as conn:
        clients.save(conn, clients.new_backend(client_id, client_id, options["--scope"], jwks=jwks))
    return lambda: client_assertion(key, client_id, f"{SERVER}/oauth/token")


def test_telemonitoring_app_guide(world: World) -> None:
    scenario = Scenario(
        world.http,
        {
            "assertion": _backend(world, "telemonitoring-apps.md"),
            "bsn": world.both.bsn,
            "patient": world.both.patient_id,
        },
    )
    assert run_guide("telemonitoring-apps.md", scenario) == 10


def test_pgo_app_guide(world: World) -> None:
    (options,) = commands((GUIDES / "pgo-apps.md").read_text(), "add-pgo")
    pgo, secret = clients.new_pgo(
        options["--client-id"], options["--name"], [options["--redirect-uri"]]
    )
    with world.db.write() as conn:
        clients.save(conn, pgo)
    verifier = secrets.token_urlsafe(48)
    basic = base64.b64encode(f"{pgo.client_id}:{secret}".encode()).decode()
    scenario = Scenario(
        world.http,
        {
            "bsn": world.hf.bsn,
            "patient": world.hf.patient_id,
            "other-patient": world.copd.patient_id,
            "verifier": verifier,
            "challenge": pkce_challenge(verifier),
            "basic": basic,
        },
    )
    assert run_guide("pgo-apps.md", scenario) == 15


def test_ehr_system_guide(world: World) -> None:
    (options,) = commands((GUIDES / "ehr-systems.md").read_text(), "add-backend")
    assert options["--scope"] == BACKEND_SCOPE  # the demo EHR is the guide's EHR
    scenario = Scenario(
        world.http,
        {
            "assertion": _backend(world, "ehr-systems.md"),
            "patient": world.hf.patient_id,
            "bsn": world.hf.bsn,
            "flag": world.flag,
        },
    )
    assert run_guide("ehr-systems.md", scenario) == 14


class BulkScenario(Scenario):
    """A scenario whose export worker runs when the guide polls again after a 202: the first
    poll sees the export queued, the next one finished."""

    def __init__(self, http: TestClient, known: dict[str, str | Callable[[], str]]) -> None:
        super().__init__(http, known)
        app: Any = http.app
        self.worker = ExportWorker(app.state.exports)
        self.pending: set[str] = set()

    def send(self, request: Request) -> Any:
        """Send; before a repeated status poll, write the queued exports."""
        target = self.fill(request.target)
        if request.method == "GET" and target in self.pending:
            while self.worker.run_once("guide"):
                pass
        response = super().send(request)
        if "/$export-status/" in target:
            if response.status_code == 202:
                self.pending.add(target)
            else:
                self.pending.discard(target)
        return response


def test_bulk_data_guide(database_url: str, tmp_path: Path) -> None:
    with _world(database_url, export_dir=tmp_path / "exports", export_worker="off") as world:
        scenario = BulkScenario(
            world.http,
            {"assertion": _backend(world, "bulk-data.md"), "patient": world.hf.patient_id},
        )
        assert run_guide("bulk-data.md", scenario) == 9
