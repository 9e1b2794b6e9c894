"""The numbers of a report: smoothed curves, steps to a target loss, and one summary row per run."""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

from .runfiles import Run


def ema(values: Sequence[float], beta: float) -> list[float]:
    """Debiased exponential moving average (as Adam's moments): m_t = beta m_{t-1} + (1 - beta) x_t,
    s_t = m_t / (1 - beta^t). A constant series stays constant; beta = 0 returns the values."""
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"smoothing factor must be in [0, 1), got {beta}")
    out, m = [], 0.0
    for t, x in enumerate(values, start=1):
        m = beta * m + (1.0 - beta) * x
        out.append(m / (1.0 - beta ** t))
    return out


def smoothing_for(beta: float, lengths: Sequence[int]) -> float:
    """The EMA factor for curves of these lengths: ``beta``, lowered where needed so that the EMA's time constant
    1/(1 - beta) is at most a tenth of the shortest curve (0.667 for 30 steps; 0.9 from 100 steps on), so a short
    run's smoothed loss does not lag far behind it."""
    shortest = min((n for n in lengths if n), default=0)
    if not shortest:
        return beta
    return min(beta, max(0.0, 1.0 - 10.0 / shortest))


def steps_to_target(steps: Sequence[float], values: Sequence[float], target: float) -> Optional[int]:
    """First step whose value is <= target (None if it never gets there)."""
    for step, value in zip(steps, values):
        if value <= target:
            return int(step)
    return None


def default_target(runs: Sequence[Run], beta: float) -> Optional[float]:
    """The highest final validation loss among the runs (the highest final smoothed train loss if no run has a
    validation loss): a level every finite run reaches, so steps-to-target compares how fast each gets there."""
    finals = [ys[-1] for ys in (r.series("val_loss")[1] for r in runs) if ys]
    if not finals:
        finals = [ema(ys, beta)[-1] for ys in (r.series("train_loss")[1] for r in runs) if ys]
    finals = [f for f in finals if math.isfinite(f)]
    return max(finals) if finals else None


@dataclass
class Summary:
    """One row of the report's table."""
    run: str
    optimizer: str
    steps_done: int
    steps_planned: Optional[int]
    final_val: Optional[float]
    best_val: Optional[float]
    best_val_step: Optional[int]
    final_train_smoothed: Optional[float]
    tokens_per_s: Optional[float]  # median over steps
    step_time_ms: Optional[float]  # median over steps
    skipped_steps: int
    steps_to_target: Optional[int]  # smoothed train loss
    steps_to_target_val: Optional[int]  # first evaluation at or below the target
    elapsed_s: Optional[float]


def _median(values: list[float]) -> Optional[float]:
    return statistics.median(values) if values else None


def summarize(run: Run, beta: float, target: Optional[float]) -> Summary:
    steps, train = run.series("train_loss")
    smooth = ema(train, beta) if train else []
    val_steps, val = run.series("val_loss")
    best = min(range(len(val)), key=val.__getitem__) if val else None
    last = run.records[-1] if run.records else {}
    step_times = run.series("step_time_s")[1]
    return Summary(
        run=run.name, optimizer=run.optimizer, steps_done=int(last.get("step", 0)), steps_planned=run.planned_steps,
        final_val=val[-1] if val else None,
        best_val=val[best] if best is not None else None,
        best_val_step=int(val_steps[best]) if best is not None else None,
        final_train_smoothed=smooth[-1] if smooth else None,
        tokens_per_s=_median(run.series("tokens_per_s")[1]),
        step_time_ms=_median([1000 * t for t in step_times]),
        skipped_steps=int(last.get("skipped_steps", 0) or 0),
        steps_to_target=steps_to_target(steps, smooth, target) if (smooth and target is not None) else None,
        steps_to_target_val=steps_to_target(val_steps, val, target) if (val and target is not None) else None,
        elapsed_s=last.get("elapsed_s"))


def mean_std(values: Sequence[Optional[float]]) -> tuple[Optional[float], Optional[float]]:
    """Mean and sample standard deviation of the values that are present (std None for fewer than two)."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return None, None
    return statistics.fmean(present), (statistics.stdev(present) if len(present) > 1 else None)
