"""Shared pieces of the repo's argparse commands (data.fineweb, sample.py, evals.hellaswag, the benchmarks, ...):
the help formatter, and where a benchmark writes its JSON."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: X)" only for options that take a value and have a default: not for flags such as
    --no-progress, whose stored default (True) reads as if the flag were on, nor for unset (None) defaults."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.nargs == 0 or action.default is None:
            return action.help or ""
        return super()._get_help_string(action)


def add_results_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    """``--out`` and ``--overwrite`` of a benchmark whose JSON goes to ``default`` (a description) by default."""
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON path (default {default}; if that file exists, e.g. the committed results, it is "
                             f"kept and a timestamped name beside it is used, which git ignores)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing --out or default file (to update committed results)")


def refuse_existing_out(out: Path | None, overwrite: bool) -> None:
    """Before a benchmark runs: an explicit ``--out`` that exists needs ``--overwrite``."""
    if out is not None and Path(out).exists() and not overwrite:
        raise SystemExit(f"error: --out {out} exists; pass --overwrite to replace it, or choose another --out")


def results_path(out: Path | None, default: Path, overwrite: bool) -> Path:
    """Where a benchmark writes: ``--out``, else ``default`` unless that exists and ``overwrite`` is off, in which case
    ``<stem>-<UTC time>.json`` beside it (benchmarks/results/ ignores such names), so committed results stay."""
    if out is not None:
        return Path(out)
    default = Path(default)
    if default.exists() and not overwrite:
        return default.with_name(f"{default.stem}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}{default.suffix}")
    return default


def written_note(path: Path, default: Path) -> str:
    """The line a benchmark prints after writing ``path``."""
    if Path(path) != Path(default) and Path(path).parent == Path(default).parent:
        return f"wrote {path} ({default} exists and is kept; --overwrite replaces it)"
    return f"wrote {path}"
