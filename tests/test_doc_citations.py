"""Citations in the package point at files the repository ships.

A docstring that cites a file outside the repository (the development machine's ``../shared`` folder) or a
``docs/`` page that does not exist sends a user nowhere. The §-sections and quirk numbers (``Q7``) that the package
cites must also exist in ``docs/reference_semantics.md``, so a renumbering there cannot leave them pointing at the
wrong fact.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "tttlrm_ns"
SEMANTICS = REPO / "docs" / "reference_semantics.md"

# A path under the sibling folder ``../shared``, or its docs / reference subfolders however they are prefixed.
OUTSIDE = re.compile(r"\.\./shared\b|(?<![\w-])shared/(?:docs|reference)\b")
# A repository path under docs/ with an extension; the lookbehind skips URLs and longer paths (``foo/docs/x.md``).
DOCS_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*\w\.[A-Za-z]+\b")
SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
QUIRK = re.compile(r"\bQ(\d{1,2})\b")


def _text_files(root: Path) -> dict[Path, str]:
    """Every text file under ``root`` (binary assets, i.e. files with a NUL byte, and caches are skipped)."""
    out = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        out[path] = data.decode("utf-8")
    return out


def _hits(pattern: re.Pattern, files: dict[Path, str]) -> list[tuple[str, str]]:
    """(file:line, match) for every match of ``pattern``."""
    hits = []
    for path, text in files.items():
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            hits.append((f"{path.relative_to(REPO)}:{line}", m.group(0)))
    return hits


def test_patterns_catch_what_they_are_meant_to():
    """The regular expressions themselves (a pattern that matches nothing would make the tests below vacuous)."""
    assert OUTSIDE.search("see ``../shared/docs/reference_semantics.md`` §1.3")
    assert OUTSIDE.search("tttlrm-eval ../shared/data/mydesk")
    assert OUTSIDE.search("goldens in shared/reference/README.md")
    assert not OUTSIDE.search("a shared library; shared/state between ranks")
    assert DOCS_PATH.findall("``docs/reference_semantics.md`` and docs/img/x.png, not https://a.b/docs/c.md") == [
        "docs/reference_semantics.md", "docs/img/x.png"]
    assert SECTION.findall("§2-§5, §4.6.1") == ["2", "5", "4.6.1"]
    assert QUIRK.findall("(Q7, Q16; FAQ12)") == ["7", "16"]


def test_package_cites_nothing_outside_the_repository():
    hits = _hits(OUTSIDE, _text_files(PKG))
    assert not hits, ("files under tttlrm_ns/ cite paths users do not have (cite docs/reference_semantics.md or "
                      f"another shipped file instead): {hits}")


def test_docs_paths_cited_by_the_package_exist():
    hits = _hits(DOCS_PATH, _text_files(PKG))
    assert any(m == "docs/reference_semantics.md" for _, m in hits)  # the scan sees the docstrings it is meant for
    missing = [(where, m) for where, m in hits if not (REPO / m).exists()]
    assert not missing, f"tttlrm_ns/ cites docs/ files that the repository does not have: {missing}"


def _semantics_ids() -> tuple[set[str], set[str]]:
    """Section numbers (from the headings) and quirk numbers (from the ``**Qn`` entries) of the reference page."""
    text = SEMANTICS.read_text()
    sections = set(re.findall(r"^#{2,4} (\d+(?:\.\d+)*)\.? ", text, flags=re.M))
    quirks = set(re.findall(r"^\* \*\*Q(\d{1,2}) ", text, flags=re.M))
    return sections, quirks


def test_reference_page_has_the_sections_and_quirks_the_code_cites():
    """Every § and Q number in the package and the tests exists on the page."""
    sections, quirks = _semantics_ids()
    # The page keeps the numbering the package has always cited: sections 0-9 and quirks Q1-Q21.
    assert {str(i) for i in range(10)} <= sections and quirks == {str(i) for i in range(1, 22)}
    files = _text_files(PKG) | {p: p.read_text() for p in sorted((REPO / "tests").glob("*.py"))}
    cited_sections = {(w, s) for w, m in _hits(SECTION, files) for s in SECTION.findall(m)}
    cited_quirks = {(w, q) for w, m in _hits(QUIRK, files) for q in QUIRK.findall(m)}
    assert cited_sections and cited_quirks
    bad = sorted({(w, "§" + s) for w, s in cited_sections if s not in sections}
                 | {(w, "Q" + q) for w, q in cited_quirks if q not in quirks})
    assert not bad, f"citations of docs/reference_semantics.md that name no section / quirk there: {bad}"
    assert "cwchenwang/tttLRM" in SEMANTICS.read_text()  # the page says where its facts come from
