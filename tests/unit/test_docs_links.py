"""The pages a user reads first point at what is there: README.md, CONTRIBUTING.md and docs/ link only to files (and
headings) that exist, cite only benchmarks/RESULTS.md sections that exist, and every page in docs/ is in mkdocs.yml's
nav (mkdocs builds a page left out of it without a warning, and no menu reaches it). helper-227 checked them by hand;
nothing kept them so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["README.md", "CONTRIBUTING.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]


def prose(text: str) -> str:
    """``text`` without its fenced code blocks and inline code (their quotes are code, not citations)."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`]*`", "", text)


def heading_anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def broken_links(page: Path) -> list[str]:
    """Each relative link of ``page`` whose file is not there, or whose ``#anchor`` is no heading of that file."""
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", prose(linked.read_text(encoding="utf-8")), flags=re.M)
            if anchor not in {heading_anchor(h) for h in headings}:
                broken.append(target)
    return broken


def cited_sections(text: str) -> set[str]:
    """The RESULTS.md sections ``text`` cites: a quoted name right after "RESULTS.md" (`RESULTS.md "quality"`,
    `RESULTS.md "size-helen", "gpu-224"`), and any quoted hyphenated name in its prose ("normalize-speed")."""
    text = prose(text)
    names = set(re.findall(r'"([a-z0-9]+(?:-[a-z0-9]+)+)"', text))
    for quoted in re.findall(r'RESULTS\.md[^"\n]{0,40}((?:"[a-z0-9-]+"(?:,? (?:and )?)?)+)', text):
        names.update(re.findall(r'"([a-z0-9-]+)"', quoted))
    return names


def nav_pages(nav: Any) -> set[str]:
    """Every page file named anywhere in mkdocs.yml's ``nav`` tree."""
    if isinstance(nav, str):
        return {nav}
    if isinstance(nav, dict):
        return set().union(*(nav_pages(value) for value in nav.values()))
    return set().union(*(nav_pages(item) for item in nav)) if nav else set()


def test_every_relative_link_of_the_pages_reaches_a_file_and_heading_that_exist() -> None:
    broken = {page: found for page in PAGES if (found := broken_links(ROOT / page))}
    assert not broken, broken


def test_every_results_section_the_pages_cite_exists() -> None:
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text(encoding="utf-8")
    sections = set(re.findall(r"<!-- ([a-z0-9-]+):start -->", results))
    readme = cited_sections((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(readme) > 20  # the parser still finds the README's citations
    unknown = {
        page: missing
        for page in PAGES
        if (missing := sorted(cited_sections((ROOT / page).read_text(encoding="utf-8")) - sections))
    }
    assert not unknown, unknown


def test_the_mkdocs_nav_lists_every_docs_page() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    pages = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert not pages - listed, f"docs pages not in mkdocs.yml's nav: {sorted(pages - listed)}"
    assert not listed - pages, f"mkdocs.yml's nav names pages that are not there: {sorted(listed - pages)}"


def test_a_broken_link_an_unknown_section_and_a_page_off_the_nav_are_found(tmp_path: Path) -> None:
    (tmp_path / "there.md").write_text("# A heading, with punctuation\n\ntext\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](there.md) [ok](there.md#a-heading-with-punctuation) [web](https://example.org/x) [gone](gone.png)\n"
        "[no heading](there.md#nope) `[in code](gone2.md)`\n```\n[in a block](gone3.md)\n```\n"
    )
    assert broken_links(page) == ["gone.png", "there.md#nope"]
    text = 'RESULTS.md "quality", "size-helen" and "gpu-224"; measured ("normalize-speed"); `load("rbf-linear")`'
    assert cited_sections(text) == {"quality", "size-helen", "gpu-224", "normalize-speed"}
    assert nav_pages([{"Home": "index.md"}, {"API": [{"A": "api/a.md"}, "api/b.md"]}]) == {
        "index.md",
        "api/a.md",
        "api/b.md",
    }
