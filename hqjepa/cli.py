"""`hqjepa` command line: one subcommand per job, each implemented in its own module.

A subcommand module exposes `configure_parser(parser)` and `main(args) -> int`; it is imported only
when its subcommand runs, so `hqjepa --help` stays fast and needs none of the heavy dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable
from typing import NoReturn

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth-bigearthnet": ("hqjepa.data.synth_archive", "write a synthetic BigEarthNet archive (v1 or v2 layout)"),
    "synth-geobench": ("hqjepa.eval.synth_geobench", "write small GeoBench-format versions of the six tasks"),
    "pretrain-local": ("hqjepa.pretrain_local", "pretrain on synthetic pairs in one process (no Ray)"),
    "export": ("hqjepa.portable", "write an encoder artifact (model.safetensors + config.json) from export.pt"),
    "migrate-shards": ("hqjepa.data.migrate", "rewrite a shard directory of an earlier layout in the current one"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose usage errors (an unknown option, a missing or malformed argument) are one
    line on stderr, `PROG: error: MESSAGE`, exit code 2, like every other bad value the commands
    refuse; `--help` prints the usage as before. Subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        """One line instead of argparse's usage block and message."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(extra: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    """The top-level parser: one subcommand per entry of COMMANDS (and of `extra`), for --help."""
    parser = ArgumentParser(prog="hqjepa", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_module, help_text) in {**(extra or {}), **COMMANDS}.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None, extra: dict[str, tuple[str, str]] | None = None) -> int:
    """Run `hqjepa COMMAND ...`; `extra` lists commands another entry point (ray_jobs.cli) adds."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        build_parser(extra).parse_args(argv)  # prints help or the error and exits
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    parser = ArgumentParser(prog=f"hqjepa {name}", description=COMMANDS[name][1])
    module.configure_parser(parser)
    return run_command(parser.prog, module.main, parser.parse_args(rest))


def run_command(prog: str, main: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Call a subcommand's `main`; a bad value the user gave (ConfigError) is one line on stderr, exit 2."""
    from hqjepa.config import ConfigError

    try:
        return int(main(args) or 0)
    except ConfigError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
