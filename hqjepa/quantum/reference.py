"""The FQS circuit run by PennyLane: the reference, and the place to swap in a quantum device.

Two ways, both real QNodes of `circuit.swap_test_circuit` with the torch interface:

- `pennylane_fidelity`: one circuit execution per sample with adjoint differentiation, the way the
  paper ran it (`diff_method="adjoint"`; the device is a config option, e.g. "default.qubit",
  "lightning.qubit" or a hardware plugin that supports it).
- `pennylane_broadcast_fidelity`: one broadcast execution for the whole batch (PennyLane parameter
  broadcasting) differentiated by backprop through the simulator; "default.qubit" only.

PennyLane is optional (`pip install 'hqjepa[reference]'`); importing this module without it raises
ModuleNotFoundError with that hint. PennyLane runs on the CPU in double precision: inputs on another
device or in float32 are copied (differentiably) and the result is returned in the inputs' dtype and
device.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from hqjepa.quantum.circuit import N_WIRES, swap_test_circuit
from hqjepa.quantum.fidelity import import_pennylane

qml = import_pennylane()  # optional: without it, an error naming the extra to install


@lru_cache(maxsize=8)
def fidelity_qnode(device: str = "default.qubit", diff_method: str = "adjoint") -> qml.QNode:
    """The FQS QNode on the PennyLane device `device` (11 wires), torch interface."""
    return qml.QNode(swap_test_circuit, qml.device(device, wires=N_WIRES), interface="torch", diff_method=diff_method)


def _to_cpu64(*tensors: Tensor) -> list[Tensor]:
    return [t.to(device="cpu", dtype=torch.float64) for t in tensors]


def pennylane_fidelity(student: Tensor, teacher: Tensor, predictor: Tensor, device: str = "default.qubit") -> Tensor:
    """F per sample [B], one adjoint-differentiated circuit execution per sample."""
    qnode = fidelity_qnode(device, "adjoint")
    s, t, p = _to_cpu64(student, teacher, predictor)
    values = [qnode(s[b], t[b], p[b]) for b in range(s.shape[0])]
    out = torch.stack(values) if values else s.new_zeros(0)
    return out.to(dtype=student.dtype, device=student.device)


def pennylane_broadcast_fidelity(
    student: Tensor, teacher: Tensor, predictor: Tensor, device: str = "default.qubit"
) -> Tensor:
    """F per sample [B] from one broadcast execution (batch = broadcast axis), backprop gradients."""
    qnode = fidelity_qnode(device, "backprop")
    s, t, p = _to_cpu64(student, teacher, predictor)
    if s.shape[0] == 0:
        return student.new_zeros(0)
    out = qnode(s, t, p)
    return out.reshape(s.shape[0]).to(dtype=student.dtype, device=student.device)
