"""Learning-rate schedule: linear warmup, constant phase, then a linear or cosine warmdown.

The schedule is a multiplier of each param group's base LR, used through
``torch.optim.lr_scheduler.LambdaLR`` so it works with every optimizer and is saved in checkpoints.
"""

from __future__ import annotations

import math


def warmdown_asked(steps: int, warmdown_frac: float, warmdown_steps: int | None = None) -> int:
    """The warmdown length asked, in steps: ``warmdown_steps`` when given (the reference runs count it in steps:
    1450 of 5100), else ``round(warmdown_frac * steps)``. The config refuses both at once (configs/schema.py)."""
    if warmdown_steps is not None:
        if warmdown_frac:
            raise ValueError(f"train.warmdown_steps ({warmdown_steps}) and train.warmdown_frac ({warmdown_frac}) "
                             f"both set the warmdown: set one of them")
        return warmdown_steps
    return round(warmdown_frac * steps)


def fit_phases(steps: int, warmup_steps: int, warmdown_frac: float,
               warmdown_steps: int | None = None) -> tuple[int, int]:
    """(warmup, warmdown) in steps of a ``steps``-step run.

    The warmdown asked is :func:`warmdown_asked`, at least 2 steps when one is asked at all: the last warmdown step runs at
    ``1/m`` of the way down (see :func:`lr_multiplier`), so a 1-step warmdown would keep the peak LR. When warmup
    and warmdown do not both fit, the run is split between them in proportion to what was asked, warmup first,
    keeping a warmdown of at least 2 steps (``fit_phases(5, 10, 0.2) == (3, 2)``).
    """
    asked = warmdown_asked(steps, warmdown_frac, warmdown_steps)
    wanted = warmdown_frac > 0 if warmdown_steps is None else warmdown_steps > 0  # a tiny fraction still asks for one
    warmdown = min(steps, max(asked, 2 if wanted else 0))
    if warmup_steps + warmdown <= steps:
        return warmup_steps, warmdown
    warmup = round(steps * warmup_steps / (warmup_steps + warmdown))
    if warmdown:
        warmup = min(warmup, steps - min(2, steps))
    return warmup, steps - warmup


def lr_multiplier(step: int, *, steps: int, warmup_steps: int, warmdown_frac: float, decay: str = "linear",
                  min_frac: float = 0.0, warmdown_steps: int | None = None) -> float:
    """LR / base LR at optimizer step ``step`` (0-based) of a ``steps``-step run.

    warmup: (step + 1) / warmup_steps for step < warmup_steps; then 1 until the last
    ``m = warmdown_steps`` (or ``round(warmdown_frac * steps)``) steps, over which it falls towards ``min_frac``: the
    i-th warmdown step (i = 0..m-1) has progress i/m, so the last step still moves. Linear with min_frac 0 this is
    the reference scripts' (steps - step) / m (modded-nanogpt, the Scion and Clipped Scion NanoGPT code).
    A run too short for both phases shares itself between them with :func:`fit_phases`.
    """
    warmup_steps, warmdown = fit_phases(steps, warmup_steps, warmdown_frac, warmdown_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    start = steps - warmdown
    if warmdown == 0 or step < start:
        return 1.0
    progress = min(1.0, (step - start) / warmdown)
    if decay == "linear":
        shape = max(0.0, (steps - step) / warmdown)  # = 1 - progress, in the reference's form: bitwise its LR
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"train.lr_decay must be 'linear' or 'cosine', got {decay!r}")
    return min_frac + (1.0 - min_frac) * shape
