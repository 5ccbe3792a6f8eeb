"""Masking: I-JEPA multiblock masks on the patch grid (`multiblock`)."""
