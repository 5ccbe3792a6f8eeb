"""Per-step metrics of a run: a CSV file (the plot's source) and a TensorBoard event log.

Only rank 0 of a distributed run writes. Columns are fixed by the first row written; a later row
with a new key is an error, so a CSV never silently loses a column. Resuming appends to the same
files after dropping rows at or beyond the resumed step (they belong to the run that was cut off).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path


class RunLog:
    """The metrics of one run in `run_dir`: metrics.csv and, if `tensorboard`, tensorboard/ event files.

    A fresh log replaces an old metrics.csv; with `resume_step` the old rows before that step are kept
    and later rows appended (module docstring)."""

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume_step: int | None = None) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.csv_path = self.dir / "metrics.csv"
        self.columns: list[str] | None = None
        if resume_step is not None and self.csv_path.exists():
            self._truncate(resume_step)
        elif self.csv_path.exists():
            self.csv_path.unlink()
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tensorboard"))

    def _truncate(self, resume_step: int) -> None:
        with self.csv_path.open() as f:
            rows = list(csv.DictReader(f))
        if not rows:
            return
        self.columns = list(rows[0].keys())
        with self.csv_path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            w.writeheader()
            w.writerows(r for r in rows if int(float(r["step"])) < resume_step)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        """Append one row (step and metrics) to the CSV, and each finite value to TensorBoard."""
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        new = self.columns is None
        if new:
            self.columns = list(row)
        extra = set(row) - set(self.columns)
        if extra:
            raise KeyError(f"metrics {sorted(extra)} appeared after the CSV header was written")
        with self.csv_path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.columns)
            if new and f.tell() == 0:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in self.columns})
        if self._tb is not None:
            for k, v in row.items():
                if k != "step" and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def close(self) -> None:
        """Flush and close the TensorBoard writer."""
        if self._tb is not None:
            self._tb.close()


def read_metrics(csv_path: str | Path) -> dict[str, list[float]]:
    """CSV -> column name -> values (empty cells become NaN)."""
    with Path(csv_path).open() as f:
        rows = list(csv.DictReader(f))
    cols: dict[str, list[float]] = {k: [] for k in (rows[0] if rows else {})}
    for r in rows:
        for k in cols:
            cols[k].append(float(r[k]) if r.get(k) not in (None, "") else math.nan)
    return cols
