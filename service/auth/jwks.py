"""Fetching a backend client's JWKS from its registered URL, guarded against SSRF.

OWASP API7, with the shared guard of :mod:`service.core.ssrf`: https only; the host is resolved and
every loopback, private, link-local, CGNAT, multicast or reserved address is refused; the
connection goes to the checked IP (pinned, with the host name kept for TLS and ``Host``);
redirects are not followed; size and time are capped.
The JWKS is cached no longer than the response's ``Cache-Control: max-age`` (SMART asym).
``jwks_allow_private`` lifts the address and https rules for development and tests.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from service.core import ssrf

MAX_JWKS_BYTES = 64 * 1024
_MAX_AGE = re.compile(r"max-age=(\d+)")


class JwksError(Exception):
    """The JWKS could not be fetched or is not a JWKS."""


def check_url(url: str, *, allow_private: bool) -> None:
    """Check a JWKS URL at registration, without network access; JwksError when refused.

    An IP-literal or ``localhost`` host is checked here; a DNS name is checked each time the
    JWKS is fetched (:func:`resolve_target`), because what it resolves to can change.
    """
    try:
        ssrf.check_url(url, allow_private=allow_private, noun="JWKS")
    except ssrf.UnsafeTarget as exc:
        raise JwksError(str(exc)) from exc


def resolve_target(url: str, *, allow_private: bool) -> tuple[str, str, str]:
    """Check ``url`` and pick the address to connect to: ``(pinned_url, host, ip)``."""
    try:
        target = ssrf.resolve_target(url, allow_private=allow_private, noun="JWKS")
    except ssrf.UnsafeTarget as exc:
        raise JwksError(str(exc)) from exc
    return target.pinned_url, target.host, target.ip


class JwksFetcher:
    """Fetches and caches JWKS documents by URL."""

    def __init__(self, *, allow_private: bool, timeout: float) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def get(self, url: str, *, refresh: bool = False) -> dict[str, Any]:
        """The JWKS at ``url`` (from the cache while its max-age lasts, unless ``refresh``)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached is not None and cached[0] > now and not refresh:
            return cached[1]
        jwks, max_age = self._fetch(url)
        with self._lock:
            if max_age > 0:
                self._cache[url] = (now + max_age, jwks)
            else:
                self._cache.pop(url, None)
        return jwks

    def _fetch(self, url: str) -> tuple[dict[str, Any], int]:
        pinned, host, _ = resolve_target(url, allow_private=self.allow_private)
        port = urlsplit(url).port
        try:
            headers = {"Host": f"{host}:{port}" if port else host, "Accept": "application/json"}
            with (
                httpx.Client(timeout=self.timeout, follow_redirects=False) as client,
                client.stream(
                    "GET", pinned, headers=headers, extensions={"sni_hostname": host}
                ) as response,
            ):
                if response.status_code != 200:
                    raise JwksError(f"The JWKS URL answered {response.status_code}")
                body = b""
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise JwksError("The JWKS document is too large")
                cache_control = response.headers.get("cache-control", "")
        except httpx.HTTPError as exc:
            raise JwksError(f"Cannot fetch the JWKS: {type(exc).__name__}") from exc
        try:
            jwks = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise JwksError("The JWKS URL did not return JSON") from exc
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise JwksError("The JWKS URL did not return a JWKS")
        match = _MAX_AGE.search(cache_control)
        no_store = "no-store" in cache_control or "no-cache" in cache_control
        max_age = int(match.group(1)) if match and not no_store else 0
        return jwks, max_age
