"""Prometheus metrics: HTTP requests, resources written, alert notifications, Subscription delivery.

With ``serve --workers N`` every worker process counts on its own, and a scrape reaches
whichever worker the kernel hands the connection to. So the workers run in prometheus_client's
multiprocess mode: :mod:`service.runtime.serving` points ``PROMETHEUS_MULTIPROC_DIR`` at an empty
directory before they start, each process writes its values to memory-mapped files there, and
``/metrics`` in any worker adds up the files of all of them (dead workers' counts included).
That variable must be set before this module is first imported, which is why the parent sets
it before spawning the workers. A single-process server keeps its values in memory.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# The *_created series would double the output and no dashboard here uses them.
disable_created_metrics()

HTTP_REQUESTS = Counter(
    "telemon_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "telemon_http_request_duration_seconds",
    "Time from receiving a request to the end of its response, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RESOURCES_WRITTEN = Counter(
    "telemon_resources_written",
    "FHIR resource versions committed through the API, by resource type and interaction "
    "(create, update, delete); Bundle entries count one each.",
    ["type", "interaction"],
)
NOT_EVALUATED = Counter(
    "telemon_observations_not_evaluated",
    "Vital-signs Observations of enrolled patients stored but evaluated by no alert rule, by "
    "reason: unknown-code (a code not in the concept table) or no-rule (no rule of the "
    "patient's programmes reads that measurement).",
    ["reason"],
)
ALERT_NOTIFICATIONS = Counter(
    "telemon_alert_notifications",
    "Alert changes that notify (an alert raised, raised to a higher severity, or an open "
    "alert retracted), by rule, severity and resulting Flag status (active: raised).",
    ["rule", "severity", "status"],
)
DELIVERY_BACKLOG = Gauge(
    "telemon_subscription_delivery_backlog",
    "Subscription notification events queued and not yet delivered (all subscriptions), "
    "read from the database at scrape time.",
    # Shared state read at each scrape: the value of the process that answered this scrape.
    multiprocess_mode="mostrecent",
)
EVENTS_DELIVERED = Counter(
    "telemon_subscription_events_delivered",
    "Subscription notification events a receiver acknowledged with a 2xx (counted by the "
    "process that delivered them).",
)
HEARTBEATS_DELIVERED = Counter(
    "telemon_subscription_heartbeats_delivered",
    "Subscription heartbeat notifications a receiver acknowledged with a 2xx.",
)
DELIVERY_FAILURES = Counter(
    "telemon_subscription_delivery_failures",
    "Failed notification attempts (each is retried), by kind: http-status, timeout, "
    "connection, refused-target (the SSRF guard refused the endpoint's address).",
    ["kind"],
)
DELIVERY_LATENCY = Histogram(
    "telemon_subscription_delivery_latency_seconds",
    "Time from queueing a notification event (in its Flag's transaction) to a receiver's 2xx.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
)

#: Methods kept as label values; anything else a client sends is counted as "other", so that
#: made-up methods cannot create unbounded numbers of series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one answered request and its duration."""
    key = (method, route, status)
    children = _children.get(key)
    if children is None:
        # labels() takes a lock and builds a key on every call; the hot path reuses children.
        label = method if method in _METHODS else "other"
        children = (
            HTTP_REQUESTS.labels(label, route, str(status)),
            HTTP_DURATION.labels(label, route),
        )
        _children[key] = children
    children[0].inc()
    children[1].observe(seconds)



def exposition() -> tuple[bytes, str]:
    """The current values in the Prometheus text format, and its content type."""
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
