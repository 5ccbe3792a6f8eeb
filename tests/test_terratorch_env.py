"""TerraTorch's tests in the environment they need.

`tests/test_terratorch.py` needs TerraTorch, and so a torchvision built for the installed torch:
PyPI's Linux torchvision wheels are CUDA builds that do not load beside this project's CPU torch.
`make test` builds `.venv-terratorch` (PyPI's torch with its torchvision, TerraTorch and this
package) and this test runs that file there, so CI runs it rather than skipping it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TT_PYTHON = ROOT / ".venv-terratorch" / "bin" / "python"


def test_terratorch_backbone_tests_pass_in_their_environment():
    if importlib.util.find_spec("terratorch") is not None:
        pytest.skip("TerraTorch is importable here: tests/test_terratorch.py runs directly in this environment")
    if not TT_PYTHON.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{TT_PYTHON} is missing: `make test` builds it")
        pytest.skip(f"{TT_PYTHON} is missing: `make test` builds it")
    proc = subprocess.run(
        [str(TT_PYTHON), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_terratorch.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, tail
