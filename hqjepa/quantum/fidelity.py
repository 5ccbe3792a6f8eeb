"""`swap_test_fidelity`: the FQS fidelity F = <Z_0> = |<psi_s|psi_t>|^2 per sample, any backend.

Angle tensors (last axis: RY, RZ, IsingZZ angle; axis -2: the register's qubits 0..4):
    student [B, L_enc, 5, 3], teacher [B, L_enc, 5, 3], predictor [B, L_pred, 5, 3] (L_pred >= 0).

Backends:
    "statevector"          batched exact simulation in PyTorch (training; CPU or CUDA).
    "pennylane"            PennyLane QNode per sample, adjoint differentiation (the reference).
    "pennylane_broadcast"  PennyLane QNode, parameter broadcasting over the batch, backprop.
All three return the same numbers and gradients (to floating-point rounding).
PennyLane is an optional dependency (`pip install 'hqjepa[reference]'`), imported only when a
PennyLane backend is asked for; without it, asking is a ModuleNotFoundError that says what to install.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hqjepa.quantum.statevector import N_QUBITS, statevector_fidelity

BACKENDS = ("statevector", "pennylane", "pennylane_broadcast")
PENNYLANE_BACKENDS = ("pennylane", "pennylane_broadcast")
REFERENCE_EXTRA = "pip install 'hqjepa[reference]'"
_DTYPES = (torch.float32, torch.float64)


def import_pennylane():
    """The `pennylane` module; ModuleNotFoundError naming the extra to install when it is absent."""
    try:
        import pennylane
    except ModuleNotFoundError as e:
        if e.name != "pennylane":  # PennyLane is there but one of its own imports failed
            raise
        raise ModuleNotFoundError(
            f"the FQS backends {' and '.join(PENNYLANE_BACKENDS)} need PennyLane, which is not installed: "
            f"{REFERENCE_EXTRA}",
            name="pennylane",
        ) from None
    return pennylane


def check_backend(backend: str) -> None:
    """ValueError for an unknown backend; for a PennyLane backend, PennyLane must import
    (`import_pennylane`'s error otherwise)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend in PENNYLANE_BACKENDS:
        import_pennylane()


def check_angles(student: Tensor, teacher: Tensor, predictor: Tensor, finite: bool = True) -> None:
    """Raise a ValueError naming the argument if the angle tensors do not fit the circuit
    (`finite=False` skips the NaN/inf check, the only one that needs a host sync)."""
    named = {"student": student, "teacher": teacher, "predictor": predictor}
    for name, x in named.items():
        if not isinstance(x, Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of angles, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[-2] != N_QUBITS or x.shape[-1] != 3:
            raise ValueError(
                f"{name}: expected angles of shape [B, L, {N_QUBITS}, 3] (last axis RY, RZ, ZZ), got {list(x.shape)}"
            )
        if x.dtype not in _DTYPES:
            raise ValueError(f"{name}: expected float32 or float64 angles, got {x.dtype}")
    for name in ("teacher", "predictor"):
        x = named[name]
        if x.dtype != student.dtype:
            raise ValueError(f"{name}: dtype {x.dtype} differs from student's {student.dtype}")
        if x.device != student.device:
            raise ValueError(f"{name}: device {x.device} differs from student's {student.device}")
        if x.shape[0] != student.shape[0]:
            raise ValueError(f"{name}: batch size {x.shape[0]} differs from student's {student.shape[0]}")
    if teacher.shape[1] != student.shape[1]:
        raise ValueError(
            f"teacher: {teacher.shape[1]} encoding layers, student has "
            f"{student.shape[1]}; both registers use the same L_enc"
        )
    if student.shape[1] < 1:
        raise ValueError("student: needs at least one encoding layer (L_enc >= 1)")
    if not finite:
        return
    finite = torch.stack([torch.isfinite(x).all() for x in named.values()])
    if not bool(finite.all()):  # one host sync for the three tensors
        name = list(named)[int((~finite).nonzero()[0, 0])]
        raise ValueError(f"{name}: angles contain NaN or infinity")


def swap_test_fidelity(
    student: Tensor,
    teacher: Tensor,
    predictor: Tensor,
    backend: str = "statevector",
    device: str = "default.qubit",
    check_finite: bool = True,
) -> Tensor:
    """SWAP-test fidelity per sample, [B], differentiable with respect to all three angle tensors.

    `device` is the PennyLane device name, used by the PennyLane backends only. `check_finite=False`
    lets NaN angles through as NaN fidelities (the training step skips such steps and counts them;
    a ValueError would end the run instead).
    """
    check_backend(backend)
    check_angles(student, teacher, predictor, finite=check_finite)
    if backend == "statevector":
        return statevector_fidelity(student, teacher, predictor)
    # PennyLane is imported only when asked for: it is optional, slow to import and not needed to train.
    from hqjepa.quantum import reference

    if backend == "pennylane":
        return reference.pennylane_fidelity(student, teacher, predictor, device)
    return reference.pennylane_broadcast_fidelity(student, teacher, predictor, device)
