"""The pretrained S2 encoder as a portable artifact: a directory of `model.safetensors` and
`config.json`, loadable with torch and safetensors alone (no Ray, PennyLane, Optuna, rasterio, h5py).

    hqjepa export runs/tiny/export.pt --out encoder/     # or a training state.pt [--shards DIR]
    model = hqjepa.load_pretrained("encoder/")           # or torch.hub.load(REPO, "hqjepa_encoder",
                                                         #        source="local", weights="encoder/")
    x = model.normalize(s2)               # raw S2 L2A [B, 12, H, W] -> (x - mean_b) / std_b
    tokens = model.forward_features(x)    # [B, (H/p)(W/p), D], the encoder's output tokens
    maps = model(x)                       # [B, D, H/p, W/p] after each block of model.out_indices

Input. S2 L2A surface reflectance x 10 000, in the units of the archive the encoder was trained on
(BigEarthNet's GeoTIFF values; imagery from processing baseline 04.00 or later carries a
BOA_ADD_OFFSET of -1000 that must be brought to the same convention first), bands in `model.bands`
order, every band on the 10 m grid (20 m and 60 m bands upsampled bilinearly, as training did:
`hqjepa.data.transforms.resample_array`), H and W multiples of the patch size. Normalisation is per
band b, x'_b = (x_b - mean_b) / std_b, with the statistics training used (the shards' manifest:
moments of the stored native-resolution values). Any image size works: positions are the closed-form
2-D sin-cos table computed for the input's patch grid (`hqjepa.models.pos_embed`), as for GeoBench's
32 to 256 px images; nothing is interpolated.

config.json (format "hqjepa-portable/1"): `architecture` (the HybridEncoder's constructor
arguments), `bands`, `mean`, `std` (one per band), `normalization` and `units` (text), `patch_size`,
`image_size` (training side in px), `gsd_m` (10), `out_indices` (the default feature blocks),
`stats_source`, `provenance` (commit, run, step, encoder, source file, the trained and the exported
process's commit/command/date) and `training_config` (the run's whole config, for reference).
`model.safetensors` holds the HybridEncoder's state dict under its own keys.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from hqjepa.models.encoder import HybridEncoder

if TYPE_CHECKING:
    from hqjepa.config import Config
    from hqjepa.data.transforms import BandStats

ARTIFACT_FORMAT = "hqjepa-portable/1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
GSD_M = 10  # every band is fed on the 10 m grid
NORMALIZATION = "x'_b = (x_b - mean_b) / std_b per band b, x on the 10 m grid, bands in `bands` order"
S2_UNITS = "S2 L2A surface reflectance x 10000 (the training archive's stored values)"
ARCH_KEYS = ("embed_dim", "depth", "n_mamba", "num_heads", "patch_size", "mlp_ratio", "d_state", "d_conv", "expand")


def default_out_indices(depth: int, n: int = 4) -> tuple[int, ...]:
    """`n` blocks evenly spaced over `depth`, ending at the last: block ceil((k + 1) depth / n) - 1
    for k < n (depth 8: 1, 3, 5, 7; depth 12: 2, 5, 8, 11; fewer when depth < n: depth 2: 0, 1)."""
    return tuple(sorted({-(-(k + 1) * depth // n) - 1 for k in range(n)}))


class PortableEncoder(nn.Module):
    """The HybridEncoder with its band order and normalisation, and a segmentation-backbone `forward`.

    Attributes: `bands` (input order), `mean` and `std` (float32 buffers [C], raw units),
    `patch_size`, `image_size` (training side, px), `gsd_m`, `embed_dim`, `out_indices` (blocks
    `forward` returns, 0-based) and `out_channels` ([embed_dim] per returned map), `config` (the
    config.json dict). With `normalize_input=True` the forward methods take raw reflectance and
    normalise it themselves; by default they take normalised input.
    """

    def __init__(
        self, config: Mapping[str, Any], out_indices: Sequence[int] | None = None, normalize_input: bool = False
    ) -> None:
        super().__init__()
        arch = config["architecture"]
        self.config = dict(config)
        self.bands: tuple[str, ...] = tuple(config["bands"])
        self.encoder = HybridEncoder(self.bands, **{k: arch[k] for k in ARCH_KEYS}, mamba_backend="auto")
        self.register_buffer("mean", torch.tensor(config["mean"], dtype=torch.float32))
        self.register_buffer("std", torch.tensor(config["std"], dtype=torch.float32))
        if self.mean.shape != (len(self.bands),) or self.std.shape != (len(self.bands),):
            raise ValueError(
                f"config has {len(self.bands)} bands but {len(config['mean'])} means, {len(config['std'])} stds"
            )
        self.patch_size = int(arch["patch_size"])
        self.embed_dim = int(arch["embed_dim"])
        self.image_size = int(config.get("image_size", 0)) or None
        self.gsd_m = config.get("gsd_m", GSD_M)
        self.normalize_input = normalize_input
        depth = len(self.encoder.blocks)
        wanted = tuple(
            out_indices if out_indices is not None else config.get("out_indices") or default_out_indices(depth)
        )
        bad = [i for i in wanted if not -depth <= int(i) < depth]
        if bad or not wanted:
            raise ValueError(
                f"out_indices {list(wanted)}: need block indices in [{-depth}, {depth}), the encoder has {depth} blocks"
            )
        self.out_indices = tuple(int(i) % depth for i in wanted)
        self.out_channels = [self.embed_dim] * len(self.out_indices)

    def _check_channels(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected input [B, C, H, W], got shape {tuple(x.shape)}")
        c, n = x.shape[1], len(self.bands)
        if c < n:
            raise ValueError(
                f"input has {c} channels but the encoder reads {n} bands in the order {', '.join(self.bands)}: "
                f"{', '.join(self.bands[c:])} missing (select_bands(x, names) orders named bands)"
            )
        if c > n:
            raise ValueError(
                f"input has {c} channels but the encoder reads {n} bands ({', '.join(self.bands)}); "
                "select_bands(x, names) keeps those"
            )

    def select_bands(
        self, x: torch.Tensor | Mapping[str, torch.Tensor], names: Sequence[str] | None = None
    ) -> torch.Tensor:
        """Input ordered by band name: `x` a mapping band -> [B, H, W], or [B, c, H, W] whose channels
        are `names` -> [B, C, H, W] in `self.bands` order (other bands dropped). A band the encoder
        reads but the input lacks is a ValueError naming it."""
        if isinstance(x, Mapping):
            planes = dict(x)
        else:
            if names is None or len(names) != x.shape[1]:
                raise ValueError(f"select_bands: name each of the {x.shape[1]} channels (names={names!r})")
            planes = {name: x[:, i] for i, name in enumerate(names)}
        missing = [b for b in self.bands if b not in planes]
        if missing:
            raise ValueError(f"input lacks band(s) {', '.join(missing)}; the encoder reads {', '.join(self.bands)}")
        return torch.stack([planes[b] for b in self.bands], dim=1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Raw S2 L2A reflectance x 1e4 [B, C, H, W] (bands in `self.bands` order, 10 m grid) ->
        (x - mean_b) / std_b per band, float32 (or x's float dtype)."""
        self._check_channels(x)
        x = x if x.is_floating_point() else x.to(torch.float32)
        return (x - self.mean[:, None, None]) / self.std[:, None, None]

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        self._check_channels(x)
        return self.normalize(x) if self.normalize_input else x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W] -> the encoder's output tokens [B, (H/p)(W/p), D] (raster order, final norm)."""
        return self.encoder(self._input(x))

    def forward(self, x: torch.Tensor, **kwargs: Any) -> list[torch.Tensor]:
        """x [B, C, H, W] -> one map [B, D, H/p, W/p] per block of `out_indices`: the tokens after
        that block through the final LayerNorm (the probing convention of `HybridEncoder.block_outputs`),
        laid on the patch grid. Extra keyword arguments (TerraTorch passes some) are ignored."""
        x = self._input(x)
        b, h, w = x.shape[0], x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        outs = self.encoder.block_outputs(x, last=len(self.encoder.blocks))
        return [outs[i].transpose(1, 2).reshape(b, self.embed_dim, h, w) for i in self.out_indices]


# --- the artifact ---------------------------------------------------------------------------------


def _replace_atomically(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_artifact(
    out_dir: str | Path,
    encoder: HybridEncoder,
    cfg: Config,
    stats: BandStats | Mapping[str, Mapping[str, float]],
    provenance: Mapping[str, Any] | None = None,
    stats_source: str = "given",
) -> Path:
    """Write `encoder` (a HybridEncoder built from `cfg.model`) to `out_dir` as model.safetensors and
    config.json; returns `out_dir`. `stats`: the per-band mean/std training normalised with, in raw
    units (a BandStats or a manifest's {band: {"mean", "std"}}); `provenance`: commit, run, step ...
    (default: this process's commit, command and date). Weights are written first, config.json last."""
    from safetensors.torch import save

    from hqjepa.checkpoint import current_provenance
    from hqjepa.data.transforms import BandStats

    if not isinstance(stats, BandStats):
        stats = BandStats.from_dict(stats)
    bands = tuple(encoder.bands)
    if bands != tuple(cfg.model.s2_bands):
        raise ValueError(
            f"encoder bands {list(bands)} differ from the config's model.s2_bands {list(cfg.model.s2_bands)}"
        )
    mean, std = stats.vectors(bands)  # KeyError naming bands without statistics
    m = cfg.model
    arch = {k: getattr(m, k) for k in ARCH_KEYS}
    config = {
        "format": ARTIFACT_FORMAT,
        "architecture": {"name": "hqjepa.models.encoder.HybridEncoder", **arch},
        "bands": list(bands),
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "normalization": NORMALIZATION,
        "units": S2_UNITS,
        "stats_source": stats_source,
        "patch_size": m.patch_size,
        "image_size": m.image_size,
        "gsd_m": GSD_M,
        "out_indices": list(default_out_indices(m.depth)),
        "provenance": dict(provenance) if provenance is not None else current_provenance(),
        "training_config": cfg.to_dict(),
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    weights = save(state, metadata={"format": ARTIFACT_FORMAT})  # bytes: written with the umask's mode, not 0600
    _replace_atomically(out / WEIGHTS_FILE, lambda p: p.write_bytes(weights))
    text = json.dumps(config, indent=1) + "\n"
    _replace_atomically(out / CONFIG_FILE, lambda p: p.write_text(text))
    return out


def export_artifact(
    src: str | Path,
    out_dir: str | Path,
    shards: str | Path | None = None,
    run: str | None = None,
    stats_split: str | None = "train",
) -> Path:
    """An encoder export (`export.pt`) or training state (`state.pt`, `checkpoint.pt`) -> the
    artifact in `out_dir`. Statistics: those the file carries, else those of the `shards`
    directory's `_manifest.json` for `stats_split` (all rows when that split has none), as
    training normalised; neither is a ValueError. A file's statistics that differ from the given
    manifest's are a ValueError too. `run` defaults to the name of the file's directory."""
    import numpy as np

    from hqjepa.checkpoint import current_provenance, load_encoder_with_meta

    src = Path(src)
    encoder, cfg, meta = load_encoder_with_meta(src)
    bands = tuple(cfg.model.s2_bands)
    stats, source = meta["band_stats"], f"{src.name} (band_stats)"
    if shards is not None:
        from hqjepa.data.shards import MANIFEST, band_stats, join, load_manifest

        manifest_stats = band_stats(load_manifest(shards), stats_split)
        if stats is None:
            stats, source = manifest_stats, f"{join(shards, MANIFEST)} (split {stats_split})"
        elif not np.allclose(np.stack(stats.vectors(bands)), np.stack(manifest_stats.vectors(bands)), rtol=1e-6):
            raise ValueError(
                f"{src} carries the band statistics it was trained with and they differ from {shards}'s manifest; "
                "leave out --shards"
            )
    if stats is None:
        raise ValueError(
            f"{src} carries no band normalisation statistics; give the shard directory it was trained on "
            "(--shards DIR) to take them from its _manifest.json"
        )
    extra = meta["extra"]
    trained = meta["provenance"] or {}
    provenance = {
        "commit": trained.get("commit"),
        "run": run if run is not None else src.resolve().parent.name,
        "step": meta["step"],
        "encoder": extra.get("encoder", cfg.train.export_encoder),
        "source": str(src),
        "trained": trained or None,
        "exported": current_provenance(),
    }
    return write_artifact(out_dir, encoder, cfg, stats, provenance, stats_source=source)


def _artifact_dir(path: str | Path) -> Path:
    root = Path(path)
    return root.parent if root.is_file() else root


def artifact_config(path: str | Path) -> dict:
    """The config.json of an artifact directory (or of a file in it), its format checked."""
    cfg_path = _artifact_dir(path) / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"{cfg_path.parent}: no {CONFIG_FILE}; not an encoder artifact (hqjepa export SRC --out DIR)"
        )
    config = json.loads(cfg_path.read_text())
    if config.get("format") != ARTIFACT_FORMAT:
        raise ValueError(f"{cfg_path} has format {config.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
    return config


def load_pretrained(
    path: str | Path,
    out_indices: Sequence[int] | None = None,
    normalize_input: bool = False,
    device: str | torch.device = "cpu",
) -> PortableEncoder:
    """The encoder of an artifact directory (or of its config.json / model.safetensors), in eval
    mode on `device`. `out_indices`: the blocks `forward` returns (default: the artifact's, four
    evenly spaced ending at the last); `normalize_input`: forward methods take raw reflectance."""
    from safetensors.torch import load_file

    root = _artifact_dir(path)
    model = PortableEncoder(artifact_config(root), out_indices, normalize_input)
    try:
        model.encoder.load_state_dict(load_file(str(root / WEIGHTS_FILE)))
    except RuntimeError as e:
        raise ValueError(
            f"{root / WEIGHTS_FILE} does not match {CONFIG_FILE}: {str(e).splitlines()[0][:300]}"
        ) from None
    return model.to(device).eval()


# --- `hqjepa export` ------------------------------------------------------------------------------


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of `hqjepa export`."""
    p.add_argument("src", help="export.pt, or a training state (state.pt / checkpoint.pt)")
    p.add_argument("--out", required=True, help="artifact directory to write (model.safetensors, config.json)")
    p.add_argument("--shards", help="shard directory the run trained on, for its manifest's band statistics")
    p.add_argument("--stats-split", default="train", help="manifest split whose statistics training used")
    p.add_argument("--run", help="run name to record (default: the directory of SRC)")


def main(args: argparse.Namespace) -> int:
    """`hqjepa export SRC --out DIR`: write the artifact; errors are one line on stderr, exit 2."""
    from hqjepa.checkpoint import CheckpointError
    from hqjepa.data.shards import ShardError

    try:
        out = export_artifact(args.src, args.out, args.shards, args.run, args.stats_split)
    except (CheckpointError, ShardError, ValueError, KeyError, OSError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"hqjepa export: error: {msg}", file=sys.stderr)
        return 2
    config = json.loads((out / CONFIG_FILE).read_text())
    print(json.dumps({"artifact": str(out), "bands": config["bands"], "provenance": config["provenance"]}))
    return 0
