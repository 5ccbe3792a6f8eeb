"""FQS: the 11-qubit SWAP-test fidelity between student and teacher states."""
