"""Importing PGO clients from a MedMij OAuth Client List (OCL, XML).

The MedMij OCL (namespace ``xmlns://afsprakenstelsel.medmij.nl/oauthclientlist/release2/``) is::

    <OAuthclientlist>
      <Tijdstempel>…</Tijdstempel> <Volgnummer>…</Volgnummer>
      <OAuthclients>
        <OAuthclient>
          <Hostname>pgo.example.org</Hostname>
          <OAuthclientOrganisatienaam>Voorbeeld PGO</OAuthclientOrganisatienaam>
        </OAuthclient>
      </OAuthclients>
    </OAuthclientlist>

The MedMij list carries no redirect URIs; telemon reads them from an optional extension element
``<RedirectURLs><RedirectURL>https://…</RedirectURL></RedirectURLs>`` inside ``OAuthclient``.
Elements are matched on their local names (any namespace, case-insensitive), so the release2
list and telemon's own examples both read. The hostname is the client id (MedMij), and every
redirect URL must be on that host. The XML is parsed with ``defusedxml`` and any DTD is refused,
so external entities (XXE) and entity expansion ("billion laughs") never run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from service.auth import clients
from service.auth.clients import ClientError
from service.storage.db import Connection

MAX_OCL_BYTES = 5 * 1024 * 1024
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


class OclError(ValueError):
    """An OCL file that cannot be read at all."""


@dataclass(frozen=True, slots=True)
class OclClient:
    """One ``OAuthclient`` entry."""

    hostname: str
    name: str
    redirect_uris: tuple[str, ...]


@dataclass(slots=True)
class OclImport:
    """What an import did: new clients with their one-time secrets, and the rest by id."""

    created: list[tuple[str, str]] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    rejected: list[tuple[str, str]] = field(default_factory=list)


def _local(element: Element) -> str:
    return element.tag.rsplit("}", 1)[-1].lower()


def _children(element: Element, name: str) -> list[Element]:
    return [c for c in element if _local(c) == name.lower()]


def _text(element: Element, name: str) -> str:
    found = _children(element, name)
    return (found[0].text or "").strip() if found else ""


def parse(data: bytes) -> list[OclClient]:
    """The client entries of an OCL document; OclError when it is unsafe or not an OCL."""
    if len(data) > MAX_OCL_BYTES:
        raise OclError(f"The OCL file is larger than {MAX_OCL_BYTES} bytes")
    try:
        root: Element = fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise OclError(
            "Refused: the OCL file declares a DTD or entities (XXE / entity expansion); "
            f"a MedMij OCL has none ({type(exc).__name__})"
        ) from exc
    except ParseError as exc:
        raise OclError(f"The OCL file is not well-formed XML: {exc}") from exc
    if _local(root) != "oauthclientlist":
        raise OclError(f"Not an OAuth client list: the root element is '{_local(root)}'")
    entries: list[OclClient] = []
    for group in _children(root, "OAuthclients"):
        for node in _children(group, "OAuthclient"):
            uris = tuple(
                (u.text or "").strip()
                for block in _children(node, "RedirectURLs")
                for u in _children(block, "RedirectURL")
            )
            entries.append(
                OclClient(
                    _text(node, "Hostname").lower(), _text(node, "OAuthclientOrganisatienaam"), uris
                )
            )
    hostnames = [e.hostname for e in entries]
    duplicates = sorted({h for h in hostnames if hostnames.count(h) > 1})
    if duplicates:
        raise OclError(f"The OCL lists these hostnames more than once: {', '.join(duplicates)}")
    return entries


def _check(entry: OclClient) -> None:
    if not _HOSTNAME.match(entry.hostname):
        raise ClientError(f"'{entry.hostname}' is not a hostname")
    if not entry.name:
        raise ClientError("no OAuthclientOrganisatienaam")
    for uri in entry.redirect_uris:
        if urlsplit(uri).hostname != entry.hostname:
            raise ClientError(f"redirect URL '{uri}' is not on the client's host")


def import_clients(conn: Connection, entries: Iterable[OclClient]) -> OclImport:
    """Register or update each entry as a PGO client (idempotent).

    A new client gets a secret (returned once in ``created``); an existing one keeps its secret
    and scopes, and gets the list's name and redirect URLs (its registered URLs when the entry
    has none). Clients missing from the list are left alone.
    """
    result = OclImport()
    for entry in entries:
        label = entry.hostname or "(no Hostname)"
        try:
            _check(entry)
            existing = clients.get(conn, entry.hostname, include_inactive=True)
            if existing is not None and existing.kind != "pgo":
                raise ClientError("already registered as a backend service")
            uris = list(entry.redirect_uris) or (existing.redirect_uris if existing else [])
            if not uris:
                raise ClientError(
                    "no redirect URL: add <RedirectURLs><RedirectURL>…</RedirectURL></RedirectURLs>"
                    " to the entry, or register it with `telemon clients add-pgo`"
                )
            candidate, secret = clients.new_pgo(entry.hostname, entry.name, uris)
        except ClientError as exc:
            result.rejected.append((label, str(exc)))
            continue
        if existing is None:
            clients.save(conn, candidate)
            result.created.append((candidate.client_id, secret))
        elif existing.name == candidate.name and existing.redirect_uris == candidate.redirect_uris:
            result.skipped.append(existing.client_id)
        else:
            existing.name = candidate.name
            existing.redirect_uris = candidate.redirect_uris
            clients.save(conn, existing)
            result.updated.append(existing.client_id)
    return result
