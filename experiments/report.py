"""Turn run directories into ``report.md`` plus PNG plots.

    python -m experiments.report runs/compare-tiny/* --out runs/compare-tiny/report [--target-loss 6.0]

Figures: train/val loss against steps, tokens and wall time; gradient norm and clip factor against steps; HellaSwag
accuracy against steps when the runs logged it (train.hellaswag_every); the sweep curve (final val loss against the swept key, one line per optimizer) when the runs form a sweep. Table: final
and best val loss, smoothed final train loss, steps to a target loss, tokens/s, step time, skipped steps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from .grouping import Group, SweepAxis, describe, group_runs, sweep_axis
from .runfiles import Run
from .stats import Summary, default_target, mean_std, smoothing_for, summarize


def _fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _setting(group: Group) -> str:
    return describe({k: v for k, v in group.setting.items() if k != "optim.name"}) or "–"


def _lowered(asked: float, used: float) -> str:
    return "" if used == asked else f", lowered from {asked:g} so it spans at most a tenth of the shortest run"


def run_table(groups: Sequence[Group], rows: dict[str, Summary]) -> list[str]:
    lines = ["| run | optimizer | setting | steps | final val | best val (step) | final train (EMA) | "
             "steps to target: val | train EMA | tokens/s | step time (ms) | skipped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for group in groups:
        for run in group.runs:
            s = rows[run.name]
            steps = f"{s.steps_done}" + (f"/{s.steps_planned}" if s.steps_planned not in (None, s.steps_done) else "")
            best = f"{_fmt(s.best_val)} ({s.best_val_step})" if s.best_val is not None else "–"
            lines.append(f"| {s.run} | {s.optimizer} | {_setting(group)} | {steps} | {_fmt(s.final_val)} | {best} | "
                         f"{_fmt(s.final_train_smoothed)} | {_fmt(s.steps_to_target_val, 'd')} | "
                         f"{_fmt(s.steps_to_target, 'd')} | {_fmt(s.tokens_per_s, ',.0f')} | "
                         f"{_fmt(s.step_time_ms, '.0f')} | {s.skipped_steps} |")
    return lines


def seed_table(groups: Sequence[Group], rows: dict[str, Summary]) -> list[str]:
    lines = ["| setting | seeds | final val (mean ± std) | final train EMA (mean ± std) | "
             "steps to target: val (mean) |", "|---|---|---|---|---|"]
    for group in groups:
        summaries = [rows[r.name] for r in group.runs]
        val = mean_std([s.final_val for s in summaries])
        train = mean_std([s.final_train_smoothed for s in summaries])
        reach = mean_std([s.steps_to_target_val for s in summaries])
        lines.append(f"| {group.label} | {len(summaries)} | {_fmt(val[0])} ± {_fmt(val[1])} | "
                     f"{_fmt(train[0])} ± {_fmt(train[1])} | {_fmt(reach[0], '.0f')} |")
    return lines


def sweep_table(axis: SweepAxis, rows: dict[str, Summary]) -> list[str]:
    lines = [f"| line | {axis.key} | final val (mean over seeds) | runs |", "|---|---|---|---|"]
    for label, points in axis.lines.items():
        for x, group in points:
            mean, _ = mean_std([rows[r.name].final_val for r in group.runs])
            lines.append(f"| {label} | {x} | {_fmt(mean)} | {', '.join(r.name for r in group.runs)} |")
    return lines


def write_report(run_dirs: Sequence[str | Path], out: str | Path, *, target_loss: Optional[float] = None,
                 smooth: float = 0.9, sweep_key: Optional[str] = None, title: Optional[str] = None) -> Path:
    """Write ``out/report.md`` and its PNGs for the given run directories; returns the report's path."""
    from . import plots  # matplotlib only when a report is written

    if not run_dirs:
        raise ValueError("no run directories given")
    runs = [Run.load(d) for d in run_dirs]
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"run directory names must be unique, got {names}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    asked, smooth = smooth, smoothing_for(smooth, [len(r.series("train_loss")[0]) for r in runs])
    target = target_loss if target_loss is not None else default_target(runs, smooth)
    rows = {r.name: summarize(r, smooth, target) for r in runs}
    axis = sweep_axis(groups, sweep_key)

    figures = [("train and validation loss against steps", plots.plot_losses(groups, "step", out / "loss_vs_step.png",
                                                                             smooth)),
               ("against training tokens", plots.plot_losses(groups, "tokens", out / "loss_vs_tokens.png", smooth)),
               ("against wall time", plots.plot_losses(groups, "elapsed_s", out / "loss_vs_time.png", smooth)),
               ("gradient norm and clip factor", plots.plot_grad_norm_and_clip(groups, out / "grad_norm_clip.png",
                                                                               smooth))]
    if any(r.has("hellaswag_acc_norm") for r in runs):
        figures.append(("HellaSwag accuracy (train.hellaswag_every)", plots.plot_hellaswag(groups,
                                                                                           out / "hellaswag.png")))
    md = [f"# {title or 'Comparison of ' + str(len(runs)) + ' runs'}", ""]
    md.append(f"Runs: {', '.join(f'`{r.path}`' for r in runs)}.")
    md.append("")
    target_note = "given" if target_loss is not None else "default: the highest final val loss of the runs"
    md.append(f"Steps to target loss {_fmt(target)} ({target_note}): the first evaluation step whose val loss is "
              f"<= target, and the first step whose smoothed train loss (EMA {smooth:.3g}{_lowered(asked, smooth)}) is. Final train (EMA) is "
              f"that smoothed loss at the last step; tokens/s and step time are medians over steps.")
    md += ["", *run_table(groups, rows), ""]
    if any(len(g.runs) > 1 for g in groups):
        md += ["## Mean over seeds", "", *seed_table(groups, rows), ""]
    if axis is not None:
        sweep_png = plots.plot_sweep(axis, out / "sweep.png")
        md += [f"## Sweep over `{axis.key}`", "", *sweep_table(axis, rows), "", f"![sweep]({sweep_png.name})", ""]
    md += ["## Curves", ""]
    md += [f"{caption}:\n\n![{caption}]({path.name})\n" for caption, path in figures]
    report = out / "report.md"
    report.write_text("\n".join(md))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.report", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories (each with metrics.jsonl and config.json)")
    parser.add_argument("--out", required=True, help="folder for report.md and the PNGs")
    parser.add_argument("--target-loss", type=float, help="loss for the steps-to-target column")
    parser.add_argument("--smooth", type=float, default=0.9, help="EMA factor of the smoothed curves, in [0, 1)")
    parser.add_argument("--sweep-key", help="config key of the sweep plot's x axis (default: detected)")
    parser.add_argument("--title", help="title of report.md")
    args = parser.parse_args(argv)
    try:
        path = write_report(args.runs, args.out, target_loss=args.target_loss, smooth=args.smooth,
                            sweep_key=args.sweep_key, title=args.title)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
