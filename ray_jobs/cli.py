"""The installed `hqjepa` command: the library's subcommands plus the Ray drivers.

    hqjepa convert --archive DIR --out DIR        # ray_jobs/convert.py
    hqjepa pretrain --config configs/tiny.yaml    # ray_jobs/pretrain.py
    hqjepa evaluate --checkpoint runs/tiny/export.pt
    hqjepa tune --space tune_spaces/masking.yaml
    hqjepa reproduce table2 --dry-run             # ray_jobs/reproduce.py

The Ray subcommands take exactly the options of `python ray_jobs/<name>.py`; the library's
(`hqjepa export`, `synth-geobench`, ...) are dispatched by `hqjepa.cli`, which never imports Ray.
"""

from __future__ import annotations

import importlib
import sys

from hqjepa import cli as library_cli

# name -> (module, one-line help); each module's main(argv) parses its own options.
RAY_COMMANDS: dict[str, tuple[str, str]] = {
    "convert": ("ray_jobs.convert", "convert a BigEarthNet archive to Parquet shards (Ray tasks)"),
    "pretrain": ("ray_jobs.pretrain", "pretrain HQ-JEPA with Ray Train (embedded Ray or RAY_ADDRESS)"),
    "evaluate": ("ray_jobs.evaluate", "GeoBench linear probing / fine-tuning, one Ray task per run"),
    "tune": ("ray_jobs.tune", "Ray Tune + Optuna search over a tune_spaces/ file"),
    "reproduce": (
        "ray_jobs.reproduce",
        "a paper table (table1|table2|table3): pretrain, evaluate, write it",
    ),
}


def main(argv: list[str] | None = None) -> int:
    """Dispatch `hqjepa COMMAND ...` to a Ray driver or to the library's command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in RAY_COMMANDS:
        module = importlib.import_module(RAY_COMMANDS[argv[0]][0])
        sys.argv[0] = f"hqjepa {argv[0]}"  # argparse's prog in usage and error lines
        return int(module.main(argv[1:]) or 0)
    return library_cli.main(argv, extra=RAY_COMMANDS)


if __name__ == "__main__":
    raise SystemExit(main())
