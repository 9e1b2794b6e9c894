"""What `compare` and `sweep` share: option parsing, optimizer variants, per-optimizer overrides, run + report."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from configs.base import ConfigError

from .launch import RunSpec, run_all

_OVERRIDE = re.compile(r"^(--)?([A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+)=(.*)$")


def normalize_override(text: str, where: str) -> str:
    """`optim.lr=0.5` or `--optim.lr=0.5` -> `--optim.lr=0.5`; anything else is an error naming `where`."""
    match = _OVERRIDE.match(text)
    if not match:
        raise ConfigError(f"{where}: expected section.key=value (e.g. optim.lr=0.5), got {text!r}")
    return f"--{match.group(2)}={match.group(4)}"


def split_passthrough(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split at a lone `--`: our options before, trainer overrides after."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def parse_list(text: str | None, what: str, cast=str) -> list:
    if text is None:
        return []
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"{what}: empty list")
    try:
        return [cast(t) for t in items]
    except ValueError as err:
        raise ConfigError(f"{what}: {err}") from err


def optimizer_of(variant: str) -> str:
    """`adamw@gr-zero` -> `adamw` (a variant is an optimizer name plus an optional @tag)."""
    return variant.split("@", 1)[0]


def variant_dirname(variant: str) -> str:
    return variant.replace("@", "-")


def parse_sets(sets: list[str], variants: list[str]) -> dict[str, list[str]]:
    """`--set dgclip:optim.lr=0.5` -> overrides per variant. A bare optimizer name applies to all its variants,
    before the overrides given for a variant by its full `name@tag`."""
    general: dict[str, list[str]] = {}
    specific: dict[str, list[str]] = {}
    for item in sets:
        target, sep, override = item.partition(":")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected OPTIMIZER:section.key=value, e.g. dgclip:optim.lr=0.5")
        override = normalize_override(override, f"--set {item!r}")
        if target in variants:
            (specific if "@" in target else general).setdefault(target, []).append(override)
        elif target in {optimizer_of(v) for v in variants}:
            general.setdefault(target, []).append(override)
        else:
            raise ConfigError(f"--set {item!r}: {target!r} is not one of the runs' optimizers: {', '.join(variants)}")
    return {v: general.get(optimizer_of(v), []) + specific.get(v, []) for v in variants}


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="TOML preset every run starts from")
    parser.add_argument("--seeds", help="comma-separated train.seed values; one run per seed")
    parser.add_argument("--nproc", type=int, default=0, help="run each under torchrun with N processes (0: plain)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (CPU: with OMP_NUM_THREADS shared)")
    parser.add_argument("--out", help="folder of the run directories and the report")
    parser.add_argument("--set", action="append", default=[], metavar="OPTIM:KEY=VALUE",
                        help="override for one optimizer (or optimizer@tag variant), repeatable")
    parser.add_argument("--wandb-group", help="also log every run to wandb, grouped under this name")
    parser.add_argument("--target-loss", type=float, help="loss for the steps-to-target column of the report")
    parser.add_argument("--smooth", type=float, default=0.9, help="EMA factor of the smoothed train loss")
    parser.add_argument("--title", help="title of the report")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("--no-report", action="store_true", help="run only, write no report")


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    """Our options, and the trainer overrides (after `--`, or unknown `--section.key=value` flags)."""
    own, passthrough = split_passthrough(sys.argv[1:] if argv is None else argv)
    args, unknown = parser.parse_known_args(own)
    if args.jobs < 1 or args.nproc < 0:
        parser.error(f"--jobs must be >= 1 and --nproc >= 0, got --jobs={args.jobs} --nproc={args.nproc}")
    stray = [u for u in unknown if not _OVERRIDE.match(u)]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    extra = [normalize_override(o, "trainer override") for o in [*unknown, *passthrough]]
    if args.wandb_group:
        extra += ["--log.wandb=true", f"--log.wandb_group={args.wandb_group}"]
    return args, extra


def with_seeds(specs: list[RunSpec], seeds: list[int]) -> list[RunSpec]:
    if not seeds:
        return specs
    return [RunSpec(f"{s.name}-s{seed}", s.out_dir.with_name(f"{s.out_dir.name}-s{seed}"),
                    [*s.overrides, f"--train.seed={seed}"]) for s in specs for seed in seeds]


def execute(args: argparse.Namespace, specs: list[RunSpec], out: Path, sweep_key: str | None = None) -> int:
    """Run the specs (skipping complete ones), then write the report of every run that has metrics."""
    results = run_all(specs, args.config, nproc=args.nproc, jobs=args.jobs, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    failed = [r.name for r in results if r.status == "failed"]
    if not args.no_report:
        from .report import write_report

        present = [s.out_dir for s in specs if (s.out_dir / "metrics.jsonl").exists()]
        if present:
            path = write_report(present, out / "report", target_loss=args.target_loss, smooth=args.smooth,
                                sweep_key=sweep_key, title=args.title)
            print(f"report: {path}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main_guard(func, argv: list[str] | None) -> int:
    try:
        return func(argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
