"""Property-based API testing with schemathesis: requests generated from the OpenAPI document
(every FHIR interaction per type, search parameters, resource bodies, OAuth endpoints, browser
forms), sent through the ASGI stack; the property is "never a server error".

Used by tests/api/test_property_based.py: bounded and repeatable in ``make test``, longer and
exploring anew by hand (see README.md, "make test").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import hypothesis.errors
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from schemathesis.generation.modes import GenerationMode

FORM = "application/x-www-form-urlencoded"


@dataclass
class FuzzReport:
    """What a run did: cases sent per status class, and every server error with a repro."""

    cases: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    server_errors: list[str] = field(default_factory=list)
    operations: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        """One line for logs and reports."""
        classes = ", ".join(f"{k}xx: {v}" for k, v in sorted(self.by_status.items()))
        return (
            f"{self.cases} cases over {self.operations} operations in {self.seconds:.1f} s "
            f"({classes}); server errors: {len(self.server_errors)}"
        )


def fuzz(
    app: FastAPI,
    *,
    examples: int,
    headers: Mapping[str, str] | Callable[[], Mapping[str, str]] | None = None,
    cookies: Mapping[str, str] | None = None,
    seed: int | None = 0,
    modes: tuple[GenerationMode, ...] = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE),
    exclude_paths: tuple[str, ...] = (),
) -> FuzzReport:
    """Send ``examples`` generated requests per operation and mode; collect server errors.

    ``headers`` may be a function, called per case (a long run renews its 5-minute token).
    ``seed=None`` explores anew on every run (the long run by hand); a fixed seed makes the
    bounded run in ``make test`` repeat the same cases, so that it cannot fail by chance.
    """
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    report = FuzzReport()
    started = time.monotonic()
    settings = hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed is not None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: every case is reported
        print_blob=False,
    )
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path in exclude_paths:
            continue
        report.operations += 1
        # Form fields are strings whatever is sent: there is nothing to negate (hypothesis
        # would search in vain), and positive cases already send any text.
        forms_only = bool(operation.body) and all(b.media_type == FORM for b in operation.body)
        for mode in modes:
            if forms_only and mode == GenerationMode.NEGATIVE:
                continue

            @settings
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: Any) -> None:
                report.cases += 1
                try:
                    sent = headers() if callable(headers) else headers
                    response = case.call(headers=dict(sent or {}), cookies=dict(cookies or {}))
                except Exception as exc:  # the test transport re-raises what the app raised
                    status, detail = 500, f"raised {type(exc).__name__}: {exc}"
                else:
                    status, detail = response.status_code, response.text
                report.by_status[status // 100] = report.by_status.get(status // 100, 0) + 1
                if status >= 500:
                    report.server_errors.append(
                        f"{status} {case.as_curl_command()}\n  {detail[:300]}"
                    )

            if seed is not None:
                check = hypothesis.seed(seed)(check)
            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to negate (an operation without parameters or body)
    report.seconds = time.monotonic() - started
    return report
