"""The shared SSRF guard (service/core/ssrf.py): which addresses are internal, and what a check
refuses before any connection (JWKS and Subscription endpoints both use it)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import pytest

from service.core import ssrf

INTERNAL = [
    "127.0.0.1", "10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "::", "fe80::1", "fd00:ec2::254", "ff02::1",
    "::ffff:10.0.0.1",  # IPv4-mapped
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
]
# (NAT64 addresses are refused even for a public IPv4 address: 64:ff9b::/96 is reserved.)
PUBLIC = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "2002:808:808::1"]


#: Every block the IANA IPv4 and IPv6 Special-Purpose Address Registries mark "Globally
#: Reachable: False" (as published; written out here independently of service/core/ssrf.py).
NOT_GLOBALLY_REACHABLE = [
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/29", "192.0.0.8/32", "192.0.0.170/32", "192.0.0.171/32",
    "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
    "240.0.0.0/4", "255.255.255.255/32",
    "::1/128", "::/128", "::ffff:0:0/96", "64:ff9b:1::/48", "100::/64", "100:0:0:1::/64",
    "2001:2::/48", "2001:10::/28", "2001:db8::/32", "3fff::/20", "5f00::/16", "fc00::/7",
    "fe80::/10",
]
#: Inside 192.0.0.0/24 and 2001::/23 (IETF protocol assignments, not globally reachable as a
#: whole), addresses the registry does not list on their own.
IETF_ASSIGNMENTS_UNLISTED = ["192.0.0.11", "192.0.0.100", "192.0.0.255", "2001:0:1::1",
                             "2001:1::4", "2001:5::1", "2001:1ff:ffff::1"]
#: Globally reachable special-purpose addresses, and ordinary ones around the blocks above.
GLOBALLY_REACHABLE = ["192.0.0.9", "192.0.0.10", "192.31.196.1", "192.52.193.1",
                      "192.175.48.1", "2620:4f:8000::1", "192.0.1.1", "198.20.0.1",
                      "11.0.0.1", "2001:200::1", "2a00:1450:4001::1"]


def _three_of(block: str) -> list[str]:
    """The first, a middle and the last address of ``block``."""
    net = ipaddress.ip_network(block)
    middle = net.network_address + net.num_addresses // 2
    return sorted({str(net.network_address), str(middle), str(net.broadcast_address)})


@pytest.mark.parametrize(
    "address", [a for block in NOT_GLOBALLY_REACHABLE for a in _three_of(block)]
)
def test_no_address_of_a_non_global_special_purpose_block_is_public(address: str) -> None:
    assert not ssrf.is_public(address)


@pytest.mark.parametrize("address", IETF_ASSIGNMENTS_UNLISTED)
def test_unlisted_ietf_protocol_assignments_are_not_public(address: str) -> None:
    assert not ssrf.is_public(address)


@pytest.mark.parametrize("address", GLOBALLY_REACHABLE)
def test_globally_reachable_addresses_are_public(address: str) -> None:
    assert ssrf.is_public(address)


@pytest.mark.parametrize("address", ["224.0.0.1", "239.255.255.255", "ff0e::1", "ff02::1"])
def test_multicast_is_not_public(address: str) -> None:
    assert not ssrf.is_public(address)


def test_the_ietf_dummy_address_is_refused_as_a_subscription_endpoint() -> None:
    """The attack run's finding: https://192.0.0.8/ passed the check."""
    with pytest.raises(ssrf.UnsafeTarget, match="not a public address"):
        ssrf.check_url("https://192.0.0.8/hook", allow_private=False, noun="endpoint")


@pytest.mark.parametrize("address", INTERNAL)
def test_internal_addresses_are_not_public(address: str) -> None:
    assert not ssrf.is_public(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert ssrf.is_public(address)


def test_resolve_refuses_a_name_with_any_internal_address(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"mixed.example": ["93.184.215.14", "10.0.0.7"], "ok.example": ["93.184.215.14"]}

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    monkeypatch.setattr(ssrf.socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(ssrf.UnsafeTarget, match="resolves to a non-public address"):
        ssrf.resolve_target("https://mixed.example/x", allow_private=False, noun="endpoint")
    target = ssrf.resolve_target("https://ok.example:8443/x?y=1", allow_private=False, noun="e")
    assert target.pinned_url == "https://93.184.215.14:8443/x?y=1"
    assert target.host_header == "ok.example:8443"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://ok.example/", "must use https"),
        ("https://ok.example:99999/", "invalid port"),
        ("https://a:b@ok.example/", "credentials"),
        ("https://ok.example/#frag", "fragment"),
        ("https://x.localhost/", "loopback name"),
    ],
)
def test_static_checks(url: str, message: str) -> None:
    with pytest.raises(ssrf.UnsafeTarget, match=message):
        ssrf.check_url(url, allow_private=False, noun="endpoint")
