"""Synthetic run directories (config.json + metrics.jsonl) for the report tests: no training needed."""
from __future__ import annotations

import json
from pathlib import Path


def write_run(path: Path, *, optim: str = "adamw", lr: float = 1e-3, seed: int = 0, steps: int = 10,
              losses: list[float] | None = None, val_every: int = 5, extra_optim: dict | None = None,
              clip: bool = False) -> Path:
    """A finished-looking run: train loss `losses` (default 10 - step/2), val loss 0.1 above it on eval steps."""
    path.mkdir(parents=True, exist_ok=True)
    config = {"optim": {"name": optim, "lr": lr, **(extra_optim or {})},
              "train": {"steps": steps, "seed": seed, "out_dir": str(path)}, "log": {"wandb": False}}
    (path / "config.json").write_text(json.dumps(config))
    losses = losses or [10.0 - s / 2 for s in range(1, steps + 1)]
    lines = []
    for step, loss in enumerate(losses, start=1):
        record = {"step": step, "train_loss": loss, "lr": lr, "grad_norm": 1.0 + step, "tokens": 100 * step,
                  "step_time_s": 0.1 * (1 + step % 3), "tokens_per_s": 1000.0, "elapsed_s": 0.2 * step,
                  "skipped_steps": 1 if step >= 4 else 0}
        if clip:
            record["clip_factor"] = min(1.0, 2.0 / (1.0 + step))
        if step % val_every == 0 or step == steps:
            record["val_loss"] = loss + 0.1
        lines.append(json.dumps(record))
    (path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return path
