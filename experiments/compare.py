"""Run one config with several optimizers (and seeds), each in its own out_dir, then report side by side.

    python -m experiments.compare --config configs/tiny.toml --optims adamw,gclip,dgclip -- --train.steps=200
    python -m experiments.compare --config configs/tiny.toml --optims gclip,gclip@lr=0.1 --set gclip@lr=0.1:optim.lr=0.1

Each optimizer takes its settings from the preset's `[optim.NAME]` table (configs/tiny.toml has all ten), so no
`--set` is needed for learning rates; `--set` overrides them per run. `--optims` entries are `optim.name` values, optionally tagged as variants (`adamw@gr` runs adamw in the
directory `adamw-gr`; `--set adamw@gr:optim.gr.enabled=true` configures it). Overrides after `--` apply to every
run. Re-running the same command skips complete runs and resumes interrupted ones.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from configs.base import ConfigError

from . import cli
from .launch import RunSpec


def build_specs(optims: list[str], sets: list[str], extra: list[str], out: Path) -> list[RunSpec]:
    per_variant = cli.parse_sets(sets, optims)
    return [RunSpec(cli.variant_dirname(v), out / cli.variant_dirname(v),
                    [f"--optim.name={cli.optimizer_of(v)}", *extra, *per_variant[v]]) for v in optims]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(parser)
    parser.add_argument("--optims", required=True, help="comma-separated optim.name values (name@tag for variants)")
    args, extra = cli.parse_args(parser, argv)
    optims = cli.parse_list(args.optims, "--optims")
    if len(set(optims)) != len(optims):
        raise ConfigError(f"--optims lists a run twice: {args.optims}; tag variants as name@tag")
    out = Path(args.out or f"runs/compare-{Path(args.config).stem}")
    specs = cli.with_seeds(build_specs(optims, args.set, extra, out), cli.parse_list(args.seeds, "--seeds", int))
    return cli.execute(args, specs, out)


if __name__ == "__main__":
    raise SystemExit(cli.main_guard(main, None))
