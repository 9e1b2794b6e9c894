"""End to end on configs/tiny.toml: `compare` trains two optimizers, stops, resumes, skips complete runs, reports."""
from __future__ import annotations

import json

import pytest

from experiments import compare
from experiments.runfiles import read_records

pytestmark = pytest.mark.slow

FAST = ["--train.steps=6", "--train.warmup_steps=0", "--train.warmdown_frac=0", "--train.batch_size=4",
        "--train.micro_batch_size=4", "--train.eval_every=3", "--train.eval_tokens=512", "--train.checkpoint_every=0",
        "--train.log_every=1"]


def test_compare_resumes_skips_complete_runs_and_reports(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "cmp"
    argv = ["--config", "configs/tiny.toml", "--optims", "adamw,dgclip", "--set", "dgclip:optim.lr=0.5",
            "--set", "dgclip:optim.delta=1e-3", "--jobs", "2", "--out", str(out)]

    # 1. both runs stop cleanly after step 3 (train.stop_after_step): "stopped", not failed, not complete
    assert compare.main([*argv, "--", *FAST, "--train.stop_after_step=3"]) == 0
    log = capsys.readouterr().out
    assert log.count("[stopped]") == 2
    assert [r["step"] for r in read_records(out / "adamw" / "metrics.jsonl")] == [1, 2, 3]

    # 2. the same comparison without the stop resumes both runs to the end and writes the report
    assert compare.main([*argv, "--", *FAST]) == 0
    log = capsys.readouterr().out
    assert log.count("[ok]") == 2 and "[skip]" not in log
    for name, optimizer in (("adamw", "adamw"), ("dgclip", "dgclip")):
        records = read_records(out / name / "metrics.jsonl")
        assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
        assert [r["step"] for r in records if "val_loss" in r] == [3, 6]
        assert json.loads((out / name / "config.json").read_text())["optim"]["name"] == optimizer
        assert "resumed from" in (out / name / "launch.log").read_text()
    assert all("clip_factor" in r for r in read_records(out / "dgclip" / "metrics.jsonl"))

    report = (out / "report" / "report.md").read_text()
    assert "| adamw | adamw |" in report and "| dgclip | dgclip | delta=0.001, lr=0.5 | 6 |" in report
    for png in ("loss_vs_step.png", "loss_vs_tokens.png", "loss_vs_time.png", "grad_norm_clip.png"):
        assert (out / "report" / png).stat().st_size > 10_000

    # 3. a third invocation trains nothing: both runs are complete
    before = (out / "adamw" / "metrics.jsonl").read_text()
    assert compare.main([*argv, "--", *FAST]) == 0
    log = capsys.readouterr().out
    assert log.count("[skip]") == 2 and "[run]" not in log
    assert (out / "adamw" / "metrics.jsonl").read_text() == before
