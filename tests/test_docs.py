"""The documentation a newcomer reads: a short README, links that lead somewhere, a picture kept in sync with its
source, and nothing that points outside the repository."""

from __future__ import annotations

import re
import runpy
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _outside_fences(path: Path) -> Iterator[Tuple[int, str]]:
    fence = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fence = not fence
            continue
        if not fence:
            yield number, line


def _anchors(path: Path) -> set:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for _, line in _outside_fences(path):
        heading = re.match(r"#{1,6} (.*)", line)
        if heading:
            text = heading.group(1).strip().lower().replace("`", "")
            anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def test_the_readme_is_a_front_door():
    lines = README.read_text().splitlines()
    assert len(lines) < 250, f"README.md has {len(lines)} lines: move reference material to docs/"
    headings = [line for _, line in _outside_fences(README) if line.startswith("## ")]
    assert headings[:2] == ["## Prerequisites", "## Quick start"], headings


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_lead_somewhere_inside_the_repository(page: Path):
    broken: List[str] = []
    for number, line in _outside_fences(page):
        for target in LINK.findall(line):
            if re.match(r"https?://", target):
                continue
            path_part, _, anchor = target.partition("#")
            destination = (page.parent / path_part).resolve() if path_part else page
            if REPO not in destination.parents and destination != REPO:
                broken.append(f"{page.name}:{number}: {target} leaves the repository")
            elif not destination.exists():
                broken.append(f"{page.name}:{number}: {target} does not exist")
            elif anchor and destination.suffix == ".md" and anchor not in _anchors(destination):
                broken.append(f"{page.name}:{number}: {target}: no heading with anchor #{anchor}")
    assert not broken, "\n".join(broken)


def test_no_page_points_at_files_outside_the_repository():
    outside = [f"{page.relative_to(REPO)}:{number}" for page in PAGES
               for number, line in enumerate(page.read_text().splitlines(), 1) if "../shared" in line]
    assert not outside, outside


def test_the_picture_is_drawn_from_its_source():
    source = runpy.run_path(str(DOCS / "runtime_diagram.py"))
    assert (DOCS / "runtime.svg").read_text() == source["render"](), (
        "docs/runtime.svg is out of date: run python docs/runtime_diagram.py")
