"""The FQS circuit of the HQ-JEPA paper as PennyLane operations: wires, layer order and the SWAP test.

Wires: 0 = ancilla, 1..5 = student register, 6..10 = teacher register, all starting in |0>.
One layer on a register (qubits q = 0..4, angles a[q] = (RY, RZ, ZZ)):

    for q: RY(a[q,0]) then RZ(a[q,1]) on q;   then for q: IsingZZ(a[q,2]) on (q, q+1 mod 5).

Student register: L_enc encoding layers, then L_pred predictor layers; teacher: L_enc layers.
SWAP test: H(0); CSWAP(0, student q, teacher q) for q = 0..4; H(0); F = <Z_0> = |<s|t>|^2.
The functions take angle arrays whose leading axes may carry a broadcast (batch) dimension.
"""

from __future__ import annotations

from hqjepa.quantum.fidelity import import_pennylane

qml = import_pennylane()  # PennyLane is optional (hqjepa[reference]): a clear error without it

N_WIRES = 11
ANCILLA = 0
STUDENT_WIRES = (1, 2, 3, 4, 5)
TEACHER_WIRES = (6, 7, 8, 9, 10)


def register_layers(angles, wires) -> None:
    """Queue the layers of `angles` [..., L, 5, 3] (leading axes broadcast) on the 5 `wires`."""
    n = len(wires)
    for layer in range(angles.shape[-3]):
        a = angles[..., layer, :, :]
        for q in range(n):
            qml.RY(a[..., q, 0], wires=wires[q])
            qml.RZ(a[..., q, 1], wires=wires[q])
        for q in range(n):
            qml.IsingZZ(a[..., q, 2], wires=[wires[q], wires[(q + 1) % n]])


def swap_test_circuit(student, teacher, predictor):
    """The 11-qubit FQS circuit; returns the measurement <Z_0> (= the fidelity)."""
    register_layers(student, STUDENT_WIRES)
    register_layers(predictor, STUDENT_WIRES)
    register_layers(teacher, TEACHER_WIRES)
    qml.Hadamard(wires=ANCILLA)
    for s_wire, t_wire in zip(STUDENT_WIRES, TEACHER_WIRES, strict=True):
        qml.CSWAP(wires=[ANCILLA, s_wire, t_wire])
    qml.Hadamard(wires=ANCILLA)
    return qml.expval(qml.PauliZ(ANCILLA))
