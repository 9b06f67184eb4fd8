"""The one guard for URLs telemon itself connects to (OWASP API7, server-side request forgery).

Used for backend clients' JWKS URLs (:mod:`service.auth.jwks`) and FHIR Subscription endpoints
(:mod:`service.subscriptions.delivery`): https only; the host is resolved and only globally
reachable unicast addresses are allowed (an allow-list, not a list of what to refuse): the
``ipaddress`` module's ``is_global`` and the IANA special-purpose address registries must both say
so, which refuses loopback, private, link-local (cloud metadata), CGNAT, the IETF protocol
assignments (``192.0.0.0/24``, ``2001::/23``), documentation, benchmarking, multicast, reserved
and unspecified addresses, IPv4 and IPv6 alike, including IPv4 addresses embedded in IPv6
(IPv4-mapped, 6to4, Teredo, NAT64); the connection then goes to the checked IP (pinned), so a DNS
answer that changes between check and connect cannot redirect it. ``allow_private`` lifts the
address and https rules for development and tests.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

_NAT64 = ipaddress.ip_network("64:ff9b::/96")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The IANA IPv4 and IPv6 Special-Purpose Address Registries: (block, globally reachable). The
#: most specific block containing an address decides; blocks the registry marks "N/A" (6to4,
#: Teredo) are left to the embedded IPv4 address. Python's own table (``is_global``) lags the
#: registry in some releases (3.11 takes 192.0.0.8 or 3fff::/20 for global), hence this one.
_SPECIAL_PURPOSE: tuple[tuple[Network, bool], ...] = tuple(
    (ipaddress.ip_network(block), reachable)
    for block, reachable in (
        ("0.0.0.0/8", False),  # "this network"
        ("10.0.0.0/8", False),  # private use
        ("100.64.0.0/10", False),  # shared address space (CGNAT)
        ("127.0.0.0/8", False),  # loopback
        ("169.254.0.0/16", False),  # link local (cloud metadata)
        ("172.16.0.0/12", False),  # private use
        ("192.0.0.0/24", False),  # IETF protocol assignments
        ("192.0.0.9/32", True),  # port control protocol anycast
        ("192.0.0.10/32", True),  # TURN anycast
        ("192.0.2.0/24", False),  # documentation (TEST-NET-1)
        ("192.31.196.0/24", True),  # AS112-v4
        ("192.52.193.0/24", True),  # AMT
        ("192.88.99.0/24", False),  # deprecated 6to4 relay anycast
        ("192.168.0.0/16", False),  # private use
        ("192.175.48.0/24", True),  # direct delegation AS112 service
        ("198.18.0.0/15", False),  # benchmarking
        ("198.51.100.0/24", False),  # documentation (TEST-NET-2)
        ("203.0.113.0/24", False),  # documentation (TEST-NET-3)
        ("240.0.0.0/4", False),  # reserved
        ("255.255.255.255/32", False),  # limited broadcast
        ("::/128", False),  # unspecified
        ("::1/128", False),  # loopback
        ("::ffff:0:0/96", False),  # IPv4-mapped
        ("64:ff9b::/96", True),  # IPv4-IPv6 translation (the embedded address decides too)
        ("64:ff9b:1::/48", False),  # IPv4-IPv6 translation, local use
        ("100::/64", False),  # discard only
        ("100:0:0:1::/64", False),  # dummy prefix
        ("2001::/23", False),  # IETF protocol assignments (Teredo 2001::/32 inside)
        ("2001:1::1/128", True),  # port control protocol anycast
        ("2001:1::2/128", True),  # TURN anycast
        ("2001:1::3/128", True),  # DNS-SD service registration protocol anycast
        ("2001:2::/48", False),  # benchmarking
        ("2001:3::/32", True),  # AMT
        ("2001:4:112::/48", True),  # AS112-v6
        ("2001:10::/28", False),  # deprecated ORCHID
        ("2001:20::/28", True),  # ORCHIDv2
        ("2001:30::/28", True),  # drone remote ID entity tags
        ("2001:db8::/32", False),  # documentation
        ("2620:4f:8000::/48", True),  # direct delegation AS112 service
        ("3fff::/20", False),  # documentation
        ("5f00::/16", False),  # segment routing SIDs
        ("fc00::/7", False),  # unique local
        ("fe80::/10", False),  # link-local unicast
    )
)


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


def _registry_says_global(ip: IPAddress) -> bool:
    """What the most specific special-purpose block holding ``ip`` says (True outside them)."""
    holding = [(b, reachable) for b, reachable in _SPECIAL_PURPOSE if ip in b]
    return not holding or max(holding, key=lambda held: held[0].prefixlen)[1]


def is_public(address: str | IPAddress) -> bool:
    """True only for a globally reachable unicast address (so never an internal target).

    Both Python's ``is_global`` and the IANA registries must agree; multicast and reserved
    (unallocated) space are refused too, and an IPv6 address that stands for an IPv4 address
    must stand for a public one.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None and not is_public(embedded):
            return False
    return (
        ip.is_global
        and not ip.is_multicast
        and not ip.is_reserved
        and _registry_says_global(ip)
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
