"""Sending one notification: SSRF-guarded, pinned, time-limited, no redirects.

Every send resolves the endpoint's host again and checks every address (:mod:`service.core.ssrf`):
what a name resolves to can change after the Subscription was accepted. The request goes to the
checked IP (the host name kept for ``Host`` and TLS SNI/certificate checks), redirects are not
followed (a 3xx is a failure), connect, write and read each have the timeout, and only a 2xx
counts as delivered. Failure reasons name the problem without secrets or response bodies.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from service import __version__
from service.core import ssrf

#: At most this much of a receiver's answer is read (and then thrown away).
MAX_RESPONSE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """The result of one attempt: delivered, or why not (``kind`` is a metrics label)."""

    delivered: bool
    kind: str  # delivered | http-status | timeout | connection | refused-target
    reason: str | None = None


class Sender:
    """Posts notifications; one per delivery thread (it keeps connections alive)."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.client = httpx.Client(follow_redirects=False, trust_env=False)

    def send(
        self, endpoint: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> Outcome:
        """POST ``body`` to ``endpoint`` with ``headers``."""
        try:
            target = ssrf.resolve_target(
                endpoint, allow_private=self.allow_private, noun="endpoint"
            )
        except ssrf.UnsafeTarget as exc:
            return Outcome(False, "refused-target", str(exc))
        request_headers = {
            **headers,
            "Host": target.host_header,
            "Content-Type": "application/fhir+json",
            "User-Agent": f"telemon/{__version__}",
        }
        try:
            with self.client.stream(
                "POST",
                target.pinned_url,
                content=body,
                headers=request_headers,
                timeout=httpx.Timeout(timeout),
                extensions={"sni_hostname": target.host},
            ) as response:
                read = 0
                for chunk in response.iter_bytes():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break
                status = response.status_code
        except httpx.TimeoutException:
            return Outcome(False, "timeout", f"No answer from the endpoint within {timeout:g} s")
        except httpx.HTTPError as exc:
            return Outcome(False, "connection", f"Cannot reach the endpoint ({type(exc).__name__})")
        if 200 <= status < 300:
            return Outcome(True, "delivered")
        return Outcome(False, "http-status", f"The endpoint answered HTTP {status}")

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.client.close()
