"""The repository stands alone: the README is a user's guide, every relative link resolves, nothing
points outside the repository, and `make lint` (run by `make test`) fails on broken code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None  # binary (images, HDF5, Parquet)


def markdown_files() -> list[Path]:
    return [p for p in tracked_files() if p.suffix == ".md"]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found, in_code = set(), False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := HEADING.match(line)):
            found.add(slug(m.group(1)))
    return found


def test_readme_is_a_guide_of_at_most_250_lines():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250, len(lines)
    for section in (
        "Install",
        "Quick start",
        "Entry points",
        "Configuration",
        "Run on a cluster",
        "Results",
        "Layout",
        "Limitations",
    ):
        assert any(line.startswith("## ") and section in line for line in lines), section


@pytest.mark.parametrize("doc", ["method.md", "design.md", "performance.md"])
def test_the_docs_exist(doc):
    assert (ROOT / "docs" / doc).stat().st_size > 1000


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for md in markdown_files():
        for target in LINK.findall(md.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path_part, _, anchor = target.partition("#")
            dest = (md.parent / unquote(path_part)).resolve() if path_part else md
            if not dest.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
            elif ROOT not in dest.parents and dest != ROOT:
                broken.append(f"{md.relative_to(ROOT)}: {target} (outside the repository)")
    assert not broken, "\n".join(broken)


def test_nothing_refers_to_paths_outside_the_repository():
    outside = re.compile(r"\.\./shared|RAY-NOTES|shared/DESIGN\.md|HQ-JEPA\.txt")
    hits = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in tracked_files()
        if p.name != Path(__file__).name and (text := text_of(p)) is not None
        for i, line in enumerate(text.splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits, hits


def test_no_work_process_words():
    """Text names dates or commits, not the process that made it."""
    words = re.compile(r"\b(?:[Ss]top|[Ii]ssue) \d+\b|\b(?:this|earlier|last|previous) session\b")
    hits = [
        f"{p.relative_to(ROOT)}:{i}: {line.strip()[:80]}"
        for p in tracked_files()
        if p.name != Path(__file__).name and (text := text_of(p)) is not None
        for i, line in enumerate(text.splitlines(), 1)
        if words.search(line)
    ]
    assert not hits, "\n".join(hits)


@pytest.fixture
def lint_tree(tmp_path):
    """A small tree linted with the repository's own ruff settings."""
    if not (ROOT / ".venv" / "bin" / "ruff").exists() or shutil.which("make") is None:
        pytest.skip("needs make and the project's .venv (make test builds both)")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "good.py").write_text('"""A module."""\n\nVALUE = 1\n')
    return tmp_path


def run_lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "-s", "-C", str(ROOT), "lint", f"LINT_ROOT={tree}"], capture_output=True, text=True, timeout=120
    )


def test_make_lint_passes_a_clean_tree(lint_tree):
    proc = run_lint(lint_tree)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("source", "expect"),
    [("import os\n\nVALUE = 1\n", "F401"), ('def f(:\n    """x"""\n', "SyntaxError|invalid-syntax|Expected")],
    ids=["unused-import", "syntax-error"],
)
def test_make_lint_fails_on_planted_errors(lint_tree, source, expect):
    (lint_tree / "bad.py").write_text(source)
    proc = run_lint(lint_tree)
    assert proc.returncode != 0
    assert re.search(expect, proc.stdout + proc.stderr), proc.stdout + proc.stderr


def test_make_lint_compiles_what_ruff_does_not_read(lint_tree):
    """compileall covers files ruff's config leaves out (here: one under an excluded folder)."""
    (lint_tree / "tests" / "data").mkdir(parents=True)
    (lint_tree / "tests" / "data" / "make_fixture.py").write_text("def f(:\n")
    proc = run_lint(lint_tree)
    assert proc.returncode != 0 and "make_fixture.py" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
