"""Every `optim.name` trains configs/tiny.toml from the CLI with no optimizer flag but its name: the preset's
`[optim.NAME]` table supplies its settings. Finite, falling loss (end-to-end, slow).

Runs `python train_gpt.py --config configs/tiny.toml --optim.name=X ...` (only run-length flags besides) and reads
`metrics.jsonl`. The per-batch training loss of the tiny corpus swings by +-2 nats between batches, so "falling" is
judged on the final validation loss (a fixed token set) against the first step's training loss (~ln 50304 = 10.8
at init).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import optim

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAINER = REPO_ROOT / "train_gpt.py"
STEPS = 16
TABLES = __import__("configs.base", fromlist=["load_toml"]).load_toml(REPO_ROOT / "configs" / "tiny.toml")["optim"]


@pytest.mark.slow
@pytest.mark.skipif(not TRAINER.exists(), reason="train_gpt.py not there yet")
@pytest.mark.parametrize("name", list(optim.OPTIMIZER_NAMES))
def test_optimizer_trains_tiny_from_the_cli(name, tmp_path):
    cmd = [sys.executable, str(TRAINER), "--config", "configs/tiny.toml", f"--train.steps={STEPS}",
           f"--optim.name={name}", f"--train.out_dir={tmp_path}", "--train.batch_size=4",
           "--train.micro_batch_size=4", "--model.block_size=32", "--train.warmup_steps=0",
           "--train.warmdown_frac=0", "--train.eval_every=0", "--train.eval_tokens=1024",
           "--train.checkpoint_every=0", "--train.log_every=4"]  # no optimizer flag: the preset's table
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if line]
    losses = [r["train_loss"] for r in records]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert all(loss == loss and abs(loss) != float("inf") for loss in losses), losses
    assert not any(r.get("skipped") for r in records)
    assert records[-1]["val_loss"] < losses[0] - 1.0, (losses, records[-1]["val_loss"])
    assert records[0]["lr"] in (TABLES[name]["lr"], TABLES[name].get("adamw_lr")), records[0]  # the table applied
