"""A run's identity: `RUN_DIR/run.json` records the settings a run was started with and their fingerprint.

    record = run_record({"config": cfg.to_dict(), "run": {"workers": 2, ...}})
    check_identity(run_dir, record, resume=False)   # RunConflict if the run exists with other settings
    write_record(run_dir, record)

`run.json` holds `identity` (every resolved setting that changes what is trained: the whole config
and the driver's settings that do, e.g. the worker count), `fingerprint` (sha256 of the identity's
canonical JSON: sorted keys, no spaces), the command line, the commit and the date (from
`hqjepa.provenance.provenance`), and `history`: one entry per later start that changed settings
(an explicit resume with other settings), naming the keys that changed.

The rules, applied before anything starts:
- no `run.json` (a new run, or a run directory from before run.json existed): the run goes ahead
  and the record is written;
- the same fingerprint: the same run continues (Ray Train resumes from its latest checkpoint);
- another fingerprint: refused with a `RunConflict` naming every key that differs, unless the
  caller resumes explicitly (`resume=True`), which records the change in `history`.
`clear_run` is the way to start over under the same name: it moves a local run directory aside
(`NAME.replaced-<UTC time>` beside it) or deletes the run's objects on an object store.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hqjepa.runs import storage

RUN_FILE = "run.json"
RECORD_FORMAT = "hqjepa-run/1"


class RunConflict(RuntimeError):
    """An existing run of this name was started with other settings; the message is one line."""


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace (the fingerprint's input); non-finite floats as strings."""
    return json.dumps(_finite(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, Mapping):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def fingerprint(identity: Mapping) -> str:
    """sha256 (hex) of `canonical_json(identity)`."""
    return hashlib.sha256(canonical_json(identity).encode()).hexdigest()


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts -> {"section.key": value}; lists stay values."""
    if not isinstance(obj, Mapping):
        return {prefix: obj}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def differing_keys(old: Mapping, new: Mapping) -> list[str]:
    """Dotted keys whose values differ between two identities (present in one only counts), sorted."""
    a, b = flatten(_finite(old)), flatten(_finite(new))
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def run_record(identity: Mapping, argv: list[str] | None = None) -> dict:
    """The record for `run.json`: format, identity, fingerprint, and the commit, command and date."""
    from hqjepa.provenance import provenance

    identity = json.loads(canonical_json(identity))  # plain JSON types, as it will be read back
    return {"format": RECORD_FORMAT, "fingerprint": fingerprint(identity), "identity": identity, **provenance(argv)}


def read_record(run_dir: str | Path) -> dict | None:
    """The run's `run.json`, or None when there is none."""
    try:
        raw = storage.read_bytes(storage.join(run_dir, RUN_FILE))
    except FileNotFoundError:
        return None
    try:
        record = json.loads(raw)
    except ValueError as e:
        raise RunConflict(f"{storage.join(run_dir, RUN_FILE)}: unreadable ({e}); move it away to continue") from None
    return record if isinstance(record, dict) else None


def write_record(run_dir: str | Path, record: Mapping) -> None:
    """Write `run.json` (atomically)."""
    storage.write_bytes(storage.join(run_dir, RUN_FILE), (json.dumps(record, indent=1) + "\n").encode())


def describe_keys(keys: list[str], limit: int = 8) -> str:
    """The first `limit` keys, then how many more: `a, b, c and 3 more`."""
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def check_identity(run_dir: str | Path, record: Mapping, *, resume: bool = False) -> dict:
    """Compare `record` with the run's `run.json` (module docstring) and return what to write:
    `record` itself for a new or unchanged run, with the old `history` kept; for an explicit
    resume with other settings, `record` with a `history` entry naming the changed keys.
    Raises RunConflict (one line, keys named) for other settings without `resume`."""
    old = read_record(run_dir)
    if old is None or "identity" not in old:
        return dict(record)
    history = list(old.get("history", []))
    if old.get("fingerprint") == record["fingerprint"]:
        return {**record, "history": history}
    keys = differing_keys(old["identity"], record["identity"])
    if not resume:
        raise RunConflict(
            f"run {run_dir} exists with different settings ({describe_keys(keys)}); "
            f"to continue it with these settings use --resume {run_dir}, to start over use a new "
            "--experiment name or --force-new"
        )
    history.append(
        {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "previous_fingerprint": old.get("fingerprint"),
            "changed": keys,
            "command": record.get("command"),
        }
    )
    return {**record, "history": history}


def clear_run(run_dir: str | Path) -> str | None:
    """Start over under the same name: move a local run directory aside to `NAME.replaced-<UTC time>`
    (returned), or delete the run's objects under an object-store prefix (returns None). Nothing
    happens when the run does not exist. Hold the run's lock while calling this."""
    if not storage.exists(run_dir):
        return None
    if storage.is_uri(run_dir):
        storage.remove_tree(run_dir)
        return None
    src = Path(run_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    dest = src.with_name(f"{src.name}.replaced-{stamp}")
    n = 1
    while dest.exists():
        dest = src.with_name(f"{src.name}.replaced-{stamp}-{n}")
        n += 1
    src.rename(dest)
    return str(dest)
