"""What a run says at its start and at its end (rank 0), and the one place that reads its results back.

Start: ``start_line`` names the run directory, the step range this process will run and where the metrics go.
End: ``end_lines`` summarize the whole run from ``metrics.jsonl`` (so a resumed run reports every step, not only
this process's): the step reached, tokens, this process's wall time, the final and best validation loss, the
newest checkpoint and the metrics file. A process that stops at ``train.stop_after_step`` says how to go on.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from trainer import checkpoint


def start_line(out_dir: Path, first_step: int, last_step: int, steps: int) -> str:
    what = "fresh run" if first_step == 0 else f"resuming at step {first_step}"
    until = f"to step {last_step} of {steps} (train.stop_after_step)" if last_step < steps else f"to step {steps}"
    return f"run {out_dir}: {what}, training {until}; metrics -> {out_dir / 'metrics.jsonl'}"


def _records(path: Path) -> list[dict]:
    rows = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def end_lines(out_dir: Path, step: int, steps: int, tokens_per_step: int, seconds: float, steps_run: int) -> list[str]:
    """The end-of-run summary: one headline, then val loss, checkpoint and metrics lines."""
    metrics = out_dir / "metrics.jsonl"
    vals = [(r["step"], r["val_loss"]) for r in _records(metrics) if _finite(r.get("val_loss"))]
    if step >= steps:
        head = f"run complete: {step}/{steps} steps, {step * tokens_per_step:,} tokens"
    else:
        head = (f"stopped at step {step}/{steps} (train.stop_after_step); re-run without it (or with a later "
                f"one) to continue")
    lines = [f"{head} ({steps_run} steps in {seconds:.1f} s in this process)"]
    if vals:
        best = min(vals, key=lambda v: v[1])
        lines.append(f"  val loss: final {vals[-1][1]:.4f} (step {vals[-1][0]}), best {best[1]:.4f} (step {best[0]})")
    saved = checkpoint.list_checkpoints(out_dir)
    lines.append(f"  newest checkpoint: {saved[-1][1] if saved else 'none'}")
    lines.append(f"  metrics: {metrics}")
    return lines
