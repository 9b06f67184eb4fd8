"""Request-telemetry middleware overhead: what RequestTelemetry adds to one request.

Calls a trivial ASGI app directly, bare and wrapped in the middleware, many times in one event
loop, and prints the difference per request (best of several rounds, to shed scheduler noise).
Three variants: access log off (logger above INFO), access log as JSON to /dev/null, and the
same with PROMETHEUS_MULTIPROC_DIR set (metrics in memory-mapped files, as under
``serve --workers N``). Budget: < 50 µs per request.

    .venv/bin/python bench/middleware.py [--requests 20000]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send


class _Route:
    path = "/fhir/{res_type}/{res_id}"


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    scope["route"] = _Route  # as the router leaves it
    await send({"type": "http.response.start", "status": 200, "headers": [(b"etag", b'W/"1"')]})
    await send({"type": "http.response.body", "body": b"{}"})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(_message: Message) -> None:
    return None


def _scope() -> dict[str, Any]:
    return {
        "type": "http",
        "method": "GET",
        "path": "/fhir/Patient/123",
        "headers": [(b"host", b"testserver"), (b"accept", b"application/fhir+json")],
    }


async def _per_request(app: Any, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        await app(_scope(), _receive, _send)
    return (time.perf_counter() - start) / requests


def _measure(requests: int, rounds: int) -> float:
    from service.api.middleware import RequestTelemetry

    wrapped = RequestTelemetry(_app)

    async def run() -> float:
        await _per_request(wrapped, 1000)  # warm up: label children, caches
        bare = min([await _per_request(_app, requests) for _ in range(rounds)])
        full = min([await _per_request(wrapped, requests) for _ in range(rounds)])
        return full - bare

    return asyncio.run(run())


def main() -> None:
    """Print the overhead per request of each variant (or one, in a child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--variant", choices=["off", "json", "multiprocess"])
    args = parser.parse_args()
    if args.variant is None:
        # Each variant in its own process: multiprocess mode is fixed when prometheus_client
        # is imported.
        for variant in ("off", "json", "multiprocess"):
            subprocess.run(
                [sys.executable, __file__, "--variant", variant, "--requests",
                 str(args.requests), "--rounds", str(args.rounds)],
                check=True,
            )
        return
    metrics_dir = None
    if args.variant == "multiprocess":  # before service.runtime.metrics imports prometheus_client
        metrics_dir = tempfile.mkdtemp(prefix="telemon-bench-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from service.runtime import logs

    if args.variant == "off":
        logging.getLogger("telemon.access").setLevel(logging.WARNING)
    else:
        logging.getLogger().addHandler(logs.make_handler("json", open(os.devnull, "w")))  # noqa: SIM115
        logging.getLogger().setLevel(logging.INFO)
    overhead = _measure(args.requests, args.rounds)
    print(f"{args.variant:>12}: {overhead * 1e6:6.1f} µs per request")
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir)


if __name__ == "__main__":
    main()
