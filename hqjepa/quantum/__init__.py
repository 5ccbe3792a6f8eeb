"""FQS: the 11-qubit SWAP-test fidelity between student and teacher states, as the HQ-JEPA paper defines it.

- `swap_test_fidelity` (fidelity.py): F per sample from angle tensors, backend "statevector"
  (exact batched PyTorch simulation, statevector.py) or "pennylane" / "pennylane_broadcast"
  (QNodes of circuit.py, reference.py).
- `FQSHead` (head.py): summaries -> angles -> F -> L_fqs and the collapse gap.
"""

from hqjepa.quantum.fidelity import BACKENDS, swap_test_fidelity
from hqjepa.quantum.head import FQSHead, FQSOutput

__all__ = ["BACKENDS", "FQSHead", "FQSOutput", "swap_test_fidelity"]
