"""The four HQ-JEPA loss curves of a run (the paper's Figure 6 kind of plot), from metrics.csv."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hqjepa.runlog import read_metrics

PANELS = (
    ("loss_pred", "token prediction  L_pred"),
    ("loss_cm", "cross-modal  L_cm"),
    ("loss_fqs", "FQS  L_fqs = 1 - F"),
    ("loss_sig", "SIGReg  L_sig"),
)


def _smooth(y: np.ndarray, window: int) -> np.ndarray:
    if window <= 1 or len(y) < window:
        return y
    kernel = np.ones(window) / window
    pad = np.pad(y, (window // 2, window - 1 - window // 2), mode="edge")
    return np.convolve(pad, kernel, mode="valid")


def plot_losses(csv_path: str | Path, png_path: str | Path, title: str | None = None) -> Path:
    """2 x 2 panels, raw per-step values faint and a moving average on top; the FQS panel also
    shows the collapse gap (matched minus shuffled fidelity) when it was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = read_metrics(csv_path)
    steps = np.asarray(m["step"])
    fig, axes = plt.subplots(2, 2, figsize=(10, 7), constrained_layout=True)
    for ax, (key, label) in zip(axes.flat, PANELS, strict=True):
        ax.set_title(label)
        ax.set_xlabel("step")
        if key not in m:
            ax.text(0.5, 0.5, "term disabled", ha="center", va="center", transform=ax.transAxes)
            continue
        y = np.asarray(m[key])
        window = max(1, len(y) // 25)
        ax.plot(steps, y, alpha=0.3, color="C0")
        ax.plot(steps, _smooth(y, window), color="C0", label=key)
        if key == "loss_fqs" and "fqs_gap" in m:
            ax2 = ax.twinx()
            gap = np.asarray(m["fqs_gap"])
            ax2.plot(steps, _smooth(gap, window), color="C3", label="fqs_gap")
            ax2.set_ylabel("matched - shuffled fidelity", color="C3")
    fig.suptitle(title or Path(csv_path).parent.name)
    png_path = Path(png_path)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path
