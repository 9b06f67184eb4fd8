"""Links into the docs resolve, and the docs need nothing outside the repository.

Code comments and docstrings cite documentation as ``docs/<page>.md#<anchor>`` (the anchor
convention is in docs/alerts/rules.md#anchors); Markdown pages link each other with relative
links. Every such link must name an existing page and, with ``#anchor``, an existing heading of
it under GitHub's anchor rules. The alert rules were once cited by numbered sections of a
reference file outside the repository; the repository's own docs carry that content now.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from service.alerts.rules import default_rule_set

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("service", "docs", "README.md")
#: ``docs/alerts/rules.md#hf-wt-3d`` in code, comments and pages, relative to the repository root.
DOCS_REFERENCE = re.compile(r"(?<![\w/.-])(docs/[\w./-]+?\.md)(?:#([\w-]+))?")
#: ``[text](target)`` in Markdown.
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")
FORBIDDEN = ("§", "alert-rules.md")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text in lower case, spaces to ``-``, and
    every character except letters, digits, ``-`` and ``_`` dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeats get ``-1``, ``-2`` as on GitHub)."""
    found: set[str] = set()
    seen: Counter[str] = Counter()
    in_code = False
    for line in page.read_text(encoding="utf-8").splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        match = None if in_code else HEADING.match(line)
        if match is None:
            continue
        base = slug(match.group(1))
        found.add(base if not seen[base] else f"{base}-{seen[base]}")
        seen[base] += 1
    return found


def text_files() -> list[Path]:
    """The text files of service/, docs/ and the README (binary files such as screenshots are
    skipped)."""
    files = []
    for top in SCANNED:
        found = [ROOT / top] if (ROOT / top).is_file() else sorted((ROOT / top).rglob("*"))
        for path in found:
            if not path.is_file() or "__pycache__" in path.parts:
                continue
            try:
                path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            files.append(path)
    return files


def links(path: Path) -> list[tuple[Path, str | None, str]]:
    """(target page, anchor or None, as written) for every docs link in ``path``."""
    text = path.read_text(encoding="utf-8")
    found = [
        (ROOT / m.group(1), m.group(2), m.group(0)) for m in DOCS_REFERENCE.finditer(text)
    ]
    if path.suffix == ".md":
        for m in MARKDOWN_LINK.finditer(text):
            target = m.group(1)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: …
                continue
            page, _, anchor = target.partition("#")
            resolved = (path.parent / page).resolve() if page else path
            found.append((resolved, anchor or None, target))
    return found


def broken(path: Path, cache: dict[Path, set[str]]) -> list[str]:
    """What is wrong with the docs links of one file."""
    problems = []
    for target, anchor, written in links(path):
        where = f"{path.relative_to(ROOT)}: {written}"
        if not target.exists():
            problems.append(f"{where}: {target} does not exist")
        elif anchor is not None:
            if target.suffix != ".md":
                problems.append(f"{where}: an anchor into a file that is not Markdown")
                continue
            if target not in cache:
                cache[target] = anchors(target)
            if anchor not in cache[target]:
                problems.append(f"{where}: no heading with anchor #{anchor}")
    return problems


def test_every_docs_link_names_an_existing_page_and_heading() -> None:
    cache: dict[Path, set[str]] = {}
    problems = [p for path in text_files() for p in broken(path, cache)]
    assert problems == []


def test_the_code_cites_the_alert_rule_pages() -> None:
    cited = {
        (target.relative_to(ROOT).as_posix(), anchor)
        for path in text_files()
        if path.suffix == ".py"
        for target, anchor, _ in links(path)
    }
    assert ("docs/alerts/rules.md", "hf-combo") in cited
    assert ("docs/alerts/engine.md", "episodes") in cited


def test_every_rule_has_its_section_with_its_parameters() -> None:
    page = (ROOT / "docs" / "alerts" / "rules.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## (\S+)\n(.*?)(?=^## |\Z)", page, re.S | re.M))
    for rule in default_rule_set().rules:
        section = sections.get(rule.id)
        assert section is not None, f"docs/alerts/rules.md has no section ## {rule.id}"
        assert f"**{rule.title}**" in section, rule.id
        for name, spec in rule.params.items():
            shown = "patient-specific" if spec.default is None else f"{spec.default:g}"
            row = f"| `{name}` | {shown} | {spec.unit} | [{spec.mark}] |"
            assert row in section, f"{rule.id}: {row}"


@pytest.mark.parametrize("word", FORBIDDEN)
def test_nothing_cites_sections_of_an_outside_reference(word: str) -> None:
    mentions = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in text_files()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if word in line
    ]
    assert mentions == []


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("HF-WT-3D", "hf-wt-3d"),
        ("Context that changes a value", "context-that-changes-a-value"),
        ("Not (yet) covered", "not-yet-covered"),
        ("7. Errors", "7-errors"),
        ("Simulated DigiD (`TELEMON_IDENTITY_PROVIDER=simulated-digid`, the default)",
         "simulated-digid-telemon_identity_providersimulated-digid-the-default"),
        ("Ordering, lateness and backfill", "ordering-lateness-and-backfill"),
    ],
)
def test_anchors_follow_github(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor
