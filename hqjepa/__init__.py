"""HQ-JEPA: cross-modal Sentinel-1/Sentinel-2 JEPA with SIGReg and a SWAP-test fidelity loss.

The library is plain PyTorch and never imports Ray; `ray_jobs/` wires it to Ray.
"""

__version__ = "0.1.0"
