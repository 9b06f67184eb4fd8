"""The one guard for URLs telemon itself connects to (OWASP API7, server-side request forgery).

Used for backend clients' JWKS URLs (:mod:`service.auth.jwks`) and FHIR Subscription endpoints
(:mod:`service.subscriptions.delivery`): https only; the host is resolved and every loopback,
private, link-local (cloud metadata), CGNAT, multicast, reserved or unspecified address is
refused, IPv4 and IPv6 alike, including IPv4 addresses embedded in IPv6 (IPv4-mapped, 6to4,
Teredo, NAT64); the connection then goes to the checked IP (pinned), so a DNS answer that changes
between check and connect cannot redirect it. ``allow_private`` lifts the address and https rules
for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeTarget(ValueError):
    """A URL the guard refuses to connect to (the message names why, without secrets)."""


@dataclass(frozen=True, slots=True)
class Target:
    """A checked URL: ``pinned_url`` has the IP in place of the host name."""

    pinned_url: str
    host: str
    ip: str
    port: int | None

    @property
    def host_header(self) -> str:
        """The ``Host`` header for the original URL."""
        return f"{self.host}:{self.port}" if self.port else self.host


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it is one of the mapping schemes."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client address
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(address: str | IPAddress) -> bool:
    """True when ``address`` is a public unicast address (and so not an internal target)."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public(embedded):
            return False
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT)
    )


def check_url(url: str, *, allow_private: bool, noun: str) -> None:
    """Check a URL without network access; :class:`UnsafeTarget` when refused.

    An IP-literal or ``localhost`` host is checked here; what a DNS name resolves to is checked
    by :func:`resolve_target` every time a connection is made, because it can change.
    ``noun`` names the URL in messages (``"JWKS"`` → "The JWKS URL must use https").
    """
    parts = urlsplit(url)
    if parts.scheme != "https" and not (allow_private and parts.scheme == "http"):
        raise UnsafeTarget(f"The {noun} URL must use https")
    host = parts.hostname
    if not host:
        raise UnsafeTarget(f"The {noun} URL has no host")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise UnsafeTarget(f"The {noun} URL must not carry credentials or a fragment")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise UnsafeTarget(f"The {noun} URL has an invalid port") from exc
    if allow_private:
        return
    if host == "localhost" or host.endswith(".localhost"):
        raise UnsafeTarget(f"The {noun} host '{host}' is a loopback name")
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        return
    if not is_public(literal):
        raise UnsafeTarget(f"The {noun} host '{host}' is not a public address")


def resolve_target(url: str, *, allow_private: bool, noun: str) -> Target:
    """Check ``url``, resolve its host and pick the (checked) address to connect to.

    Every address the name resolves to must be public, not just the one used: otherwise a name
    with one public and one internal address would pass whenever the public one came first.
    """
    check_url(url, allow_private=allow_private, noun=noun)
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80))
    except OSError as exc:
        raise UnsafeTarget(f"Cannot resolve the {noun} host '{host}'") from exc
    addresses = [str(i[4][0]) for i in infos]
    if not addresses:
        raise UnsafeTarget(f"Cannot resolve the {noun} host '{host}'")
    if not allow_private and not all(is_public(a) for a in addresses):
        raise UnsafeTarget(f"The {noun} host '{host}' resolves to a non-public address")
    ip = addresses[0]
    netloc = f"[{ip}]" if ":" in ip else ip
    if parts.port:
        netloc += f":{parts.port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    return Target(pinned, host, ip, parts.port)
