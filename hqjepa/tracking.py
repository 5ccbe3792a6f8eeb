"""Tracking runs in MLflow: the parts that need no Ray.

The Ray drivers open and fill MLflow runs through Ray's own integration
(`ray.air.integrations.mlflow`: `setup_mlflow` in the training loop, `MLflowLoggerCallback` in a
search); this module holds what they share and what needs no Ray:

- `add_tracking_args`, `tracking_from_flags`: the tracking URI from `--mlflow` or $MLFLOW_TRACKING_URI (off when
  neither is given, or `--mlflow off`) and the experiment from `--mlflow-experiment`,
  $MLFLOW_EXPERIMENT_NAME or "hqjepa";
- `flatten_params`, `mlflow_key`: a nested config as MLflow params with dotted keys ("model.embed_dim"),
  every name one MLflow accepts;
- `split_params`: which params a continued run may still log, and which changed since (MLflow
  refuses to change a logged param; the driver records the new value as a tag instead);
- `clean_metrics`, `folder_safe_metrics`: the numbers of a metrics dict as floats, with names every
  store can hold;
- `write_run_file` / `read_run_file`: RUN_FILE (tracking URI, experiment, run id) kept in a run
  directory or a checkpoint, so that a resumed run continues its MLflow run;
- `allow_file_store`: MLflow 3's opt-in for a `file:` store, taken when one is named;
- `start_run`, `continue_run`, `log_params`, `log_metrics`, `log_artifacts`, `end_run`: logging to a
  known run from the driver through an `MlflowClient`, with no global MLflow state.

MLflow is imported only inside the functions that talk to a tracking server (`pip install
'hqjepa[tracking]'`); `require_mlflow` turns its absence into one clear error.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

ENV_URI = "MLFLOW_TRACKING_URI"
ENV_EXPERIMENT = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "hqjepa"
RUN_FILE = "mlflow_run.json"
OFF = ("", "off", "none")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
MISSING = "MLflow tracking needs the mlflow package: pip install 'hqjepa[tracking]'"


@dataclasses.dataclass(frozen=True)
class Tracking:
    """Where runs are tracked: an MLflow tracking URI and an experiment name."""

    uri: str
    experiment: str

    def to_dict(self) -> dict[str, str]:
        """The plain form (a Ray task's or a trial's config carries it)."""
        return dataclasses.asdict(self)


def normalize_uri(uri: str) -> str:
    """A tracking URI as MLflow takes it; a plain path becomes an absolute file: URI, so Ray
    workers, whose working directory differs from the driver's, write to the same store."""
    if "://" in uri or uri.startswith(("file:", "sqlite:", "databricks", "postgresql:", "mysql:", "mssql:")):
        return uri
    return Path(uri).expanduser().resolve().as_uri()


def tracking_from_flags(uri: str | None, experiment: str | None = None) -> Tracking | None:
    """`--mlflow URI` (None: $MLFLOW_TRACKING_URI; "off": none) and `--mlflow-experiment NAME`
    (None: $MLFLOW_EXPERIMENT_NAME, else "hqjepa"); None when tracking is off. Tracking without
    the mlflow package raises ConfigError with the install hint (before a driver starts Ray)."""
    from hqjepa.config import ConfigError

    uri = os.environ.get(ENV_URI) if uri is None else uri
    if uri is None or uri.strip().lower() in OFF:
        return None
    try:
        require_mlflow()
    except ImportError as e:
        raise ConfigError(f"--mlflow {uri}: {e}") from None
    name = experiment or os.environ.get(ENV_EXPERIMENT) or DEFAULT_EXPERIMENT
    return Tracking(normalize_uri(uri.strip()), name)


def add_tracking_args(parser) -> None:
    """`--mlflow URI` and `--mlflow-experiment NAME` on a driver's argparse parser."""
    parser.add_argument(
        "--mlflow",
        metavar="URI",
        default=None,
        help=f"track the run in MLflow at this tracking URI (a server http://host:5000, file:DIR, a path, "
        f"sqlite:///FILE); default: ${ENV_URI}; 'off' turns it off",
    )
    parser.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        default=None,
        help=f"the MLflow experiment (default: ${ENV_EXPERIMENT}, else {DEFAULT_EXPERIMENT!r}; created if need be)",
    )


def require_mlflow() -> None:
    """Raise ImportError with the install hint when mlflow cannot be imported."""
    try:
        import mlflow  # noqa: F401
    except ImportError as e:
        raise ImportError(MISSING) from e


def mlflow_key(key: str) -> str:
    """A name MLflow accepts for a param or metric (alphanumerics and _ - . space : /): an index
    becomes a dotted part ("mask.target_scale[0]" -> "mask.target_scale.0"), anything else "_"."""
    return re.sub(r"[^\w\-. :/]", "_", re.sub(r"\[(\w*)\]", r".\1", key))


def _param_value(value: Any) -> str:
    if isinstance(value, list | tuple | dict):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def flatten_params(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{"model": {"embed_dim": 96}} -> {"model.embed_dim": "96"}: nested mappings become dotted keys
    (made valid by `mlflow_key`); lists, empty mappings and other values become their text (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{mlflow_key(str(key))}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, f"{name}."))
        else:
            out[name] = _param_value(dict(value) if isinstance(value, Mapping) else value)
    return out


def split_params(params: Mapping[str, str], logged: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(params a run that already logged `logged` may still log, params whose value changed)."""
    new = {k: v for k, v in params.items() if k not in logged}
    changed = {k: v for k, v in params.items() if k in logged and logged[k] != v}
    return new, changed


def clean_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of `metrics` as floats (NaN and infinity kept: MLflow stores them);
    strings, None and containers are left out."""
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            if not (hasattr(value, "item") and getattr(value, "ndim", 1) == 0):  # a numpy/torch scalar
                continue
            value = value.item()
        out[key] = float(value)
    return out


def folder_safe_metrics(metrics: Mapping[str, Any], leaf: str = "valid") -> dict[str, Any]:
    """`metrics` with every name that is also the folder of another ("geobench/t/linear" beside
    "geobench/t/linear/test") moved down to "<name>/<leaf>": a `file:` store keeps metric names as
    paths, and one path cannot be a file and a folder."""
    names = set(metrics)
    return {(f"{k}/{leaf}" if any(o.startswith(f"{k}/") for o in names) else k): v for k, v in metrics.items()}


def summary_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Nested numbers as one flat metrics dict with "/" joined keys ({"a": {"b": 1}} -> {"a/b": 1.0});
    None and non-finite values are left out."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(summary_metrics(value, f"{name}/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def write_run_file(directory: str | Path, run: Mapping[str, str]) -> Path:
    """Keep the run's tracking URI, experiment and run id in DIRECTORY/RUN_FILE."""
    path = Path(directory) / RUN_FILE
    path.write_text(json.dumps(dict(run), indent=1) + "\n")
    return path


def read_run_file(directory: str | Path | None) -> dict[str, str] | None:
    """DIRECTORY/RUN_FILE as written by `write_run_file`, or None when there is none."""
    if directory is None:
        return None
    path = Path(directory) / RUN_FILE
    if not path.is_file():
        return None
    run = json.loads(path.read_text())
    return run if isinstance(run, dict) and run.get("run_id") else None


# --- talking to a tracking server (MLflow imported here) ---------------------------------------------


def allow_file_store(uri: str) -> None:
    """MLflow 3 refuses a `file:` store (in maintenance; a database, `sqlite:///FILE`, is what it
    recommends) unless MLFLOW_ALLOW_FILE_STORE is set: naming one with --mlflow is that opt-in.
    Called in every process that opens the store (the driver, Ray's rank 0)."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")


def client(tracking: Tracking | str):
    """An `MlflowClient` for this tracking URI (no global MLflow state is touched)."""
    require_mlflow()
    from mlflow.tracking import MlflowClient

    uri = tracking.uri if isinstance(tracking, Tracking) else tracking
    allow_file_store(uri)
    return MlflowClient(tracking_uri=uri)


def experiment_id(tracking: Tracking) -> str:
    """The id of the tracking's experiment, created when it does not exist yet."""
    c = client(tracking)
    found = c.get_experiment_by_name(tracking.experiment)
    return found.experiment_id if found is not None else c.create_experiment(tracking.experiment)


def logged_params(tracking: Tracking | str, run_id: str) -> dict[str, str] | None:
    """The params run `run_id` has logged; None when the store has no such (live) run."""
    from mlflow.exceptions import MlflowException

    try:
        run = client(tracking).get_run(run_id)
    except MlflowException:
        return None
    return None if run.info.lifecycle_stage == "deleted" else dict(run.data.params)


def start_run(
    tracking: Tracking, run_name: str, params: Mapping[str, str] | None = None, tags: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A new run in the tracking's experiment (created if need be), its params logged; returns
    the run record `write_run_file` keeps (uri, experiment, experiment_id, run_id)."""
    exp = experiment_id(tracking)
    run = client(tracking).create_run(exp, run_name=run_name, tags=dict(tags or {}))
    record = {**tracking.to_dict(), "experiment_id": exp, "run_id": run.info.run_id}
    if params:
        log_params(record, params)
    return record


def continue_run(run: Mapping[str, str]) -> bool:
    """Mark a known run RUNNING again; False when the store no longer has it."""
    if logged_params(run["uri"], run["run_id"]) is None:
        return False
    client(run["uri"]).update_run(run["run_id"], status="RUNNING")
    return True


def log_params(run: Mapping[str, str], params: Mapping[str, str]) -> dict[str, str]:
    """Log the params the run does not have yet; a param whose value changed is set as the tag
    "changed.<key>" instead (MLflow refuses to change a param). Returns the changed ones."""
    from mlflow.entities import Param, RunTag

    c = client(run["uri"])
    new, changed = split_params(params, dict(c.get_run(run["run_id"]).data.params))
    items = list(new.items())
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        c.log_batch(run["run_id"], params=[Param(k, v) for k, v in items[i : i + 100]])
    if changed:
        c.log_batch(run["run_id"], tags=[RunTag(f"changed.{k}", v) for k, v in changed.items()])
    return changed


def log_metrics(run: Mapping[str, str], metrics: Mapping[str, Any], step: int = 0) -> None:
    """Log the numeric entries of `metrics` at `step`."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in clean_metrics(metrics).items()]
    c = client(run["uri"])
    for i in range(0, len(items), 1000):
        c.log_batch(run["run_id"], metrics=items[i : i + 1000])


def log_artifacts(run: Mapping[str, str], paths: Iterable[str | Path], artifact_path: str | None = None) -> list[str]:
    """Upload each existing file (as itself) and directory (as a folder of that name) to the
    run's artifacts; returns the names uploaded. Missing paths are skipped."""
    c = client(run["uri"])
    done = []
    for p in map(Path, paths):
        if p.is_dir():
            c.log_artifacts(run["run_id"], str(p), "/".join(filter(None, [artifact_path, p.name])))
        elif p.is_file():
            c.log_artifact(run["run_id"], str(p), artifact_path)
        else:
            continue
        done.append(p.name)
    return done


def end_run(run: Mapping[str, str], status: str = "FINISHED") -> None:
    """Mark the run FINISHED (or FAILED, KILLED)."""
    client(run["uri"]).set_terminated(run["run_id"], status=status)


def find_run(tracking: Tracking, tags: Mapping[str, str]) -> str | None:
    """The id of the newest live run of the tracking's experiment carrying all of `tags`."""
    c = client(tracking)
    found = c.get_experiment_by_name(tracking.experiment)
    if found is None:
        return None
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = c.search_runs([found.experiment_id], filter_string=query, max_results=1, order_by=["start_time DESC"])
    return runs[0].info.run_id if runs else None
