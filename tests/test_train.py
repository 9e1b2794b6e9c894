"""End-to-end: the README quickstart, config errors, exact resume after a kill, the non-finite policy."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.helpers import REPO_ROOT, env, losses, metrics, run_train, train_cmd

pytestmark = pytest.mark.slow


def test_quickstart_loss_falls_and_run_is_recorded(tmp_path):
    out = tmp_path / "run"
    run_train(f"--train.out_dir={out}", "--train.steps=40", "--train.eval_every=20")
    records = metrics(out)
    assert [r["step"] for r in records] == list(range(1, 41))
    first, last = sum(losses(out)[:5]) / 5, sum(losses(out)[-5:]) / 5
    assert first > 9.5 and last < first - 1.5, (first, last)
    assert [r["step"] for r in records if "val_loss" in r] == [20, 40]
    assert records[-1]["val_loss"] < records[19]["val_loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["train"]["steps"] == 40 and config["optim"]["name"] == "adamw"
    info = json.loads((out / "run_info.json").read_text())
    assert info["versions"]["torch"] and "git_revision" in info
    assert (out / "checkpoints" / "step_0000040.pt").exists()


@pytest.mark.parametrize("flag, message", [
    ("--train.stepz=3", "train.stepz"),
    ("--optim.name=adam", "optim.name"),
    ("--model.norm=batchnorm", "model.norm"),
    ("--train.batch_size=0", "train.batch_size must be > 0"),
    ("--nonsense.key=1", "nonsense"),
])
def test_config_errors_exit_nonzero_naming_the_key(tmp_path, flag, message):
    proc = run_train(f"--train.out_dir={tmp_path}", flag, check=False, timeout=120)
    assert proc.returncode != 0
    assert message in proc.stderr and "config error" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unknown_key_lists_valid_keys(tmp_path):
    proc = run_train(f"--train.out_dir={tmp_path}", "--train.stepz=3", check=False, timeout=120)
    assert "valid keys in train are" in proc.stderr and "checkpoint_every" in proc.stderr


def test_exact_resume_after_kill(tmp_path):
    """N steps straight equal N/2 steps, SIGKILL, re-run of the same command to N: bitwise on CPU."""
    steps = 30
    straight = tmp_path / "straight"
    run_train(f"--train.out_dir={straight}", f"--train.steps={steps}", "--train.checkpoint_every=15")

    resumed = tmp_path / "resumed"
    args = (f"--train.out_dir={resumed}", f"--train.steps={steps}", "--train.checkpoint_every=15")
    proc = subprocess.Popen(train_cmd(*args), cwd=REPO_ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpt = resumed / "checkpoints" / "step_0000015.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    killed_at = len(metrics(resumed))
    assert killed_at < steps, "the run finished before it could be killed"

    again = run_train(*args)
    assert "resumed from" in again.stdout
    assert [r["step"] for r in metrics(resumed)] == list(range(1, steps + 1))
    assert losses(resumed) == losses(straight)
    assert [m["grad_norm"] for m in metrics(resumed)] == [m["grad_norm"] for m in metrics(straight)]


def test_corrupt_newest_checkpoint_is_skipped(tmp_path):
    out = tmp_path / "run"
    run_train(f"--train.out_dir={out}", "--train.steps=6", "--train.checkpoint_every=3")
    (out / "checkpoints" / "step_0000006.pt").write_bytes(b"truncated")
    proc = run_train(f"--train.out_dir={out}", "--train.steps=8", "--train.checkpoint_every=3")
    assert "skipping unreadable checkpoint" in proc.stderr
    assert "resumed from" in proc.stdout and "step_0000003.pt" in proc.stdout
    assert [r["step"] for r in metrics(out)] == list(range(1, 9))


def test_resume_never_refuses_existing_run(tmp_path):
    run_train(f"--train.out_dir={tmp_path}", "--train.steps=2")
    proc = run_train(f"--train.out_dir={tmp_path}", "--train.steps=4", "--train.resume=never", check=False)
    assert proc.returncode != 0 and "train.resume='never'" in proc.stderr


def test_wandb_offline_needs_no_account(tmp_path):
    pytest.importorskip("wandb")
    run_train(f"--train.out_dir={tmp_path}", "--train.steps=2", "--log.wandb=true")
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb")), "no offline wandb run was recorded"
