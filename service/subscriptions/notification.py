"""Notification Bundles (Subscriptions R5 Backport IG, R4 profile) and their signature.

A notification is a ``history`` Bundle whose first entry is a ``Parameters`` resource with the
SubscriptionStatus: the Subscription reference, its ``status``, the ``type``
(``event-notification`` or ``heartbeat``), ``events-since-subscription-start`` and one
``notification-event`` per event (``event-number``, ``timestamp``, ``focus``). With
``full-resource`` content every focus Flag version follows as an entry of its own.

The signature header is ``X-Telemon-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" under the Subscription's secret>``: the receiver recomputes it over the raw body and
rejects an old ``t`` (replay).
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from service.core.dates import format_instant
from service.storage.subscription_store import Event

SIGNATURE_HEADER = "X-Telemon-Signature"
STATUS_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-status-r4"
)
NOTIFICATION_PROFILE = (
    "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
    "backport-subscription-notification-r4"
)


def _url(base: str | None, path: str) -> str:
    return f"{base}/{path}" if base else path


def notification_bundle(
    *,
    base: str | None,
    subscription_id: str,
    status: str,
    kind: str,
    events_since_start: int,
    events: Sequence[Event],
    content: str,
    resources: Mapping[tuple[str, str, int], str],
    now: int,
) -> bytes:
    """The notification as JSON bytes (the body that is sent and signed).

    ``base`` is the server's public FHIR base URL (references are relative without it);
    ``resources`` holds the JSON of the focus versions for ``full-resource`` content.
    """
    parameters: list[dict[str, Any]] = [
        {
            "name": "subscription",
            "valueReference": {"reference": _url(base, f"Subscription/{subscription_id}")},
        },
        {"name": "status", "valueCode": status},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(events_since_start)},
    ]
    entries: list[dict[str, Any]] = []
    for event in events:
        parts: list[dict[str, Any]] = [
            {"name": "event-number", "valueString": str(event.number)},
            {"name": "timestamp", "valueInstant": format_instant(event.created_at)},
        ]
        if content != "empty":
            focus = f"{event.res_type}/{event.res_id}/_history/{event.version_id}"
            parts.append({"name": "focus", "valueReference": {"reference": _url(base, focus)}})
        parameters.append({"name": "notification-event", "part": parts})
        key = (event.res_type, event.res_id, event.version_id)
        if content == "full-resource" and key in resources:
            entry: dict[str, Any] = {"resource": orjson.Fragment(resources[key])}
            if base:
                entry["fullUrl"] = f"{base}/{event.res_type}/{event.res_id}"
            first = event.version_id == 1
            entry["request"] = {
                "method": "POST" if first else "PUT",
                "url": event.res_type if first else f"{event.res_type}/{event.res_id}",
            }
            entry["response"] = {"status": "201" if first else "200"}
            entries.append(entry)
    status_id = str(uuid.uuid4())
    bundle = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"profile": [NOTIFICATION_PROFILE]},
        "type": "history",
        "timestamp": format_instant(now),
        "entry": [
            {
                "fullUrl": f"urn:uuid:{status_id}",
                "resource": {
                    "resourceType": "Parameters",
                    "id": status_id,
                    "meta": {"profile": [STATUS_PROFILE]},
                    "parameter": parameters,
                },
                "request": {
                    "method": "GET",
                    "url": _url(base, f"Subscription/{subscription_id}/$status"),
                },
                "response": {"status": "200"},
            },
            *entries,
        ],
    }
    return orjson.dumps(bundle)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Telemon-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"

