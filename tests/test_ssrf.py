"""The shared SSRF guard (service/ssrf.py): which addresses are internal, and what a check
refuses before any connection (JWKS and Subscription endpoints both use it)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from service import ssrf

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
