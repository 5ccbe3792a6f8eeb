"""PennyLane is optional (the extra hqjepa[reference]): with it hidden, every library module but the reference
backend imports and the default FQS backend runs; asking for a PennyLane backend (the functional API, the head, a
config, the module) is a one-line error naming the extra."""

import json
import subprocess
import sys
from pathlib import Path

from tests.test_layout import _modules

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = {"hqjepa.quantum.reference", "hqjepa.quantum.circuit"}  # the PennyLane backend's own modules

SCRIPT = """
import importlib, json, sys
sys.modules["pennylane"] = None  # as if it were not installed: `import pennylane` raises ModuleNotFoundError
import hqjepa, hqjepa.models.hqjepa, hqjepa.quantum
needs_pennylane = []
for m in MODULES:
    try:
        importlib.import_module(m)
    except ModuleNotFoundError as e:  # another optional integration (terratorch, ...) is fine
        if e.name == "pennylane":
            needs_pennylane.append(m)
import torch
from hqjepa.config import config_from_dict
from hqjepa.quantum import FQSHead, swap_test_fidelity

loaded = sorted(k for k in sys.modules if k.startswith("pennylane") and sys.modules[k] is not None)
out = {"needs_pennylane": needs_pennylane, "loaded": loaded}
a = torch.zeros(2, 1, 5, 3)
out["statevector"] = swap_test_fidelity(a, a, a[:, :0]).tolist()  # the default backend needs no PennyLane
errors = {}
for name, call in {
    "swap_test_fidelity": lambda: swap_test_fidelity(a, a, a[:, :0], backend="pennylane"),
    "FQSHead": lambda: FQSHead(8, backend="pennylane_broadcast"),
    "config": lambda: hqjepa.models.hqjepa.HQJEPA(config_from_dict({"loss": {"fqs_backend": "pennylane"}})),
    "import reference": lambda: importlib.import_module("hqjepa.quantum.reference"),
}.items():
    try:
        call()
        errors[name] = None
    except Exception as e:
        errors[name] = [type(e).__name__, str(e)]
out["errors"] = errors
print(json.dumps(out))
"""


def test_the_library_needs_pennylane_only_for_the_reference_backend():
    modules = [m for m in _modules() if m not in REFERENCE]
    code = SCRIPT.replace("MODULES", repr(modules))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["needs_pennylane"] == [] and out["loaded"] == []
    assert out["statevector"] == [1.0, 1.0]  # identical states: F = 1
    message = (
        "the FQS backends pennylane and pennylane_broadcast need PennyLane, which is not installed: "
        "pip install 'hqjepa[reference]'"
    )
    assert out["errors"] == {name: ["ModuleNotFoundError", message] for name in out["errors"]}
    assert "\n" not in message
