"""The library never imports Ray (`hqjepa/` is plain PyTorch; `ray_jobs/` wires it to Ray), and the top-level layout."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "hqjepa"


def _modules() -> list[str]:
    names = []
    for path in sorted(LIBRARY.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        # integrations import their optional host package (TerraTorch), absent from this environment;
        # the AST check above still reads them, and their own tests import them where it is installed
        optional_host = "integrations" in parts[:-1]  # hqjepa.integrations.<host package>
        if parts[-1] != "__main__" and not optional_host:
            names.append(".".join(parts))
    return names


def test_no_module_of_the_library_mentions_ray_in_an_import():
    offenders = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n == "ray" or n.startswith("ray.")]
    assert offenders == []


def test_importing_every_library_module_loads_no_ray():
    code = (
        "import importlib, sys\n"
        f"for m in {_modules()!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted(k for k in sys.modules if k == 'ray' or k.startswith('ray.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_top_level_layout():
    for name in (
        "hqjepa",
        "ray_jobs",
        "tune_spaces",
        "configs",
        "cluster",
        "bench",
        "experiments",
        "docs",
        "tests",
        "pyproject.toml",
        "README.md",
        "Makefile",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), name
