"""Learning-rate schedule: linear warmup, constant phase, then a linear or cosine warmdown.

The schedule is a multiplier of each param group's base LR, used through
``torch.optim.lr_scheduler.LambdaLR`` so it works with every optimizer and is saved in checkpoints.
"""

from __future__ import annotations

import math


def fit_phases(steps: int, warmup_steps: int, warmdown_frac: float) -> tuple[int, int]:
    """(warmup, warmdown) in steps, fitted into a ``steps``-step run, warmup first: the warmup keeps up to
    ``steps`` steps and the warmdown, ``round(warmdown_frac * steps)`` asked, gets at most what is left."""
    warmup = min(warmup_steps, steps)
    return warmup, min(round(warmdown_frac * steps), steps - warmup)


def lr_multiplier(step: int, *, steps: int, warmup_steps: int, warmdown_frac: float, decay: str = "linear",
                  min_frac: float = 0.0) -> float:
    """LR / base LR at optimizer step ``step`` (0-based) of a ``steps``-step run.

    warmup: (step + 1) / warmup_steps for step < warmup_steps; then 1 until the last
    ``m = round(warmdown_frac * steps)`` steps, over which it falls towards ``min_frac``: the i-th
    warmdown step (i = 0..m-1) has progress i/m, so the last step still moves (as in modded-nanogpt).
    A run too short for both phases fits them in with :func:`fit_phases`.
    """
    warmup_steps, warmdown = fit_phases(steps, warmup_steps, warmdown_frac)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    start = steps - warmdown
    if warmdown == 0 or step < start:
        return 1.0
    progress = min(1.0, (step - start) / warmdown)
    if decay == "linear":
        shape = 1.0 - progress
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"train.lr_decay must be 'linear' or 'cosine', got {decay!r}")
    return min_frac + (1.0 - min_frac) * shape
