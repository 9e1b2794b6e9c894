"""Learning-rate schedule: linear warmup, constant phase, then a linear or cosine warmdown.

The schedule is a multiplier of each param group's base LR, used through
``torch.optim.lr_scheduler.LambdaLR`` so it works with every optimizer and is saved in checkpoints.
"""

from __future__ import annotations

import math


def fit_phases(steps: int, warmup_steps: int, warmdown_frac: float) -> tuple[int, int]:
    """(warmup, warmdown) in steps of a ``steps``-step run.

    The warmdown asked is ``round(warmdown_frac * steps)``, at least 2 steps when ``warmdown_frac > 0``: the last
    warmdown step runs at ``1/m`` of the way down (see :func:`lr_multiplier`), so a 1-step warmdown would keep the
    peak LR. When warmup and warmdown do not both fit, the run is split between them in proportion to what was
    asked, warmup first, keeping a warmdown of at least 2 steps (``fit_phases(5, 10, 0.2) == (3, 2)``).
    """
    warmdown = min(steps, max(round(warmdown_frac * steps), 2 if warmdown_frac > 0 else 0))
    if warmup_steps + warmdown <= steps:
        return warmup_steps, warmdown
    warmup = round(steps * warmup_steps / (warmup_steps + warmdown))
    if warmdown:
        warmup = min(warmup, steps - min(2, steps))
    return warmup, steps - warmup


def lr_multiplier(step: int, *, steps: int, warmup_steps: int, warmdown_frac: float, decay: str = "linear",
                  min_frac: float = 0.0) -> float:
    """LR / base LR at optimizer step ``step`` (0-based) of a ``steps``-step run.

    warmup: (step + 1) / warmup_steps for step < warmup_steps; then 1 until the last
    ``m = round(warmdown_frac * steps)`` steps, over which it falls towards ``min_frac``: the i-th
    warmdown step (i = 0..m-1) has progress i/m, so the last step still moves (as in modded-nanogpt).
    A run too short for both phases shares itself between them with :func:`fit_phases`.
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
