"""torch.hub entry points of this repository.

    model = torch.hub.load("path/to/this/repo", "hqjepa_encoder", source="local", weights="encoder/")

`weights` is an encoder artifact directory written by `hqjepa export` or at the end of a run
(RUN/encoder/: model.safetensors + config.json); no weights are hosted for download.
"""

dependencies = ["torch", "safetensors"]


def hqjepa_encoder(weights=None, **kwargs):
    """The pretrained HQ-JEPA S2 encoder of the artifact directory `weights` (see
    `hqjepa.portable`): `normalize(x)` for raw S2 L2A reflectance x 1e4, `forward_features(x)` ->
    tokens [B, N, D], `forward(x)` -> feature maps [B, D, H/p, W/p] of `out_indices` blocks.
    kwargs: out_indices, normalize_input, device."""
    if weights is None:
        raise ValueError("hqjepa_encoder: pass weights=ARTIFACT_DIR (written by `hqjepa export SRC --out DIR`)")
    from hqjepa.portable import load_pretrained

    return load_pretrained(weights, **kwargs)
