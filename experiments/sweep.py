"""Run a grid over dotted config keys (optionally for several optimizers), then report with the sweep curve.

    python -m experiments.sweep --config configs/tiny.toml --optims clipped_scion optim.rho=150,600,2400 \\
        optim.lr=1e-3,3e-3 -- --train.steps=200

One run per point of the Cartesian product (times optimizers, times seeds), named after its values, e.g.
`clipped_scion-rho=600-lr=1e-3`. The first key is the x axis of the sweep plot (final val loss against it),
every other combination is a line. Resumable like `compare`.
"""
from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from configs.base import ConfigError

from . import cli
from .launch import RunSpec


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
    """`optim.rho=150,600` -> [("optim.rho", ["150", "600"])]; keys must be dotted and appear once."""
    grid, seen = [], set()
    for item in items:
        key, sep, values = item.removeprefix("--").partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"sweep axis {item!r}: expected section.key=v1,v2,... (e.g. optim.rho=150,600)")
        if key in seen:
            raise ConfigError(f"sweep axis {key} is given twice")
        seen.add(key)
        grid.append((key, cli.parse_list(values, f"sweep axis {key}")))
    if not grid:
        raise ConfigError("no sweep axis given; e.g. optim.rho=150,600,2400")
    return grid


def short_names(keys: list[str]) -> dict[str, str]:
    """Last component of each key (`optim.gr.r` -> `r`), the full key where two would collide."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def build_specs(grid: list[tuple[str, list[str]]], optims: list[str], sets: list[str], extra: list[str],
                out: Path) -> list[RunSpec]:
    keys = [k for k, _ in grid]
    names = short_names(keys)
    per_variant = cli.parse_sets(sets, optims) if optims else {}
    specs = []
    for variant in optims or [None]:
        for values in itertools.product(*(v for _, v in grid)):
            point = "-".join(f"{names[k]}={v}" for k, v in zip(keys, values))
            name = f"{cli.variant_dirname(variant)}-{point}" if variant else point
            overrides = [f"--optim.name={cli.optimizer_of(variant)}"] if variant else []
            overrides += [*extra, *per_variant.get(variant, []), *(f"--{k}={v}" for k, v in zip(keys, values))]
            specs.append(RunSpec(name, out / name, overrides))
    return specs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_common_arguments(parser)
    parser.add_argument("--optims", help="comma-separated optim.name values (default: the config's)")
    parser.add_argument("grid", nargs="+", metavar="KEY=V1,V2", help="sweep axes over dotted config keys")
    args, extra = cli.parse_args(parser, argv)
    grid = parse_grid(args.grid)
    optims = cli.parse_list(args.optims, "--optims")
    if optims and "optim.name" in dict(grid):
        raise ConfigError("give the optimizers either with --optims or as the axis optim.name, not both")
    out = Path(args.out or f"runs/sweep-{Path(args.config).stem}-{'-'.join(k for k, _ in grid)}")
    specs = cli.with_seeds(build_specs(grid, optims, args.set, extra, out), cli.parse_list(args.seeds, "--seeds", int))
    return cli.execute(args, specs, out, sweep_key=grid[0][0])


if __name__ == "__main__":
    raise SystemExit(cli.main_guard(main, None))
