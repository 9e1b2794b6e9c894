"""`python -m benchmarks.gpu`: the GPU-day command runs every stage at toy sizes on the CPU (--dry-run), writes a
JSON per stage and summary.md, and skips stages cleanly when the budget runs out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.gpu import run
from benchmarks.gpu.stages import STAGE_NAMES

REPO_ROOT = Path(__file__).resolve().parents[2]


def gpu_day(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def stage_records(out: Path) -> dict[str, dict]:
    return {name: json.loads((out / f"{name}.json").read_text()) for name in STAGE_NAMES}


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="the dry run is the CPU smoke run")
def test_dry_run_runs_every_stage_at_toy_sizes(tmp_path):
    proc = gpu_day("--dry-run", "--out", str(tmp_path), "--budget-s", "1200")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    records = stage_records(tmp_path)
    not_here = {"trainer_dgclip_cuda_graph"}
    for name, record in records.items():
        assert record["status"] == ("not available" if name in not_here else "ok"), (name, record["reason"],
                                                                                      record["output_tail"])
    assert records["trainer_dgclip_cuda_graph"]["reason"] == "not available: a CUDA graph needs CUDA"
    assert records["optim_bench"]["result"]["captured"] == "not available: needs CUDA"
    assert set(records["optim_bench"]["result"]["dgclip_comparison"]["step_ms"]) >= {"ours", "copy_floor_6_passes"}
    in_backward = records["trainer_dgclip_norm_in_backward"]["result"]  # train_gpt.py with the norm in backward
    assert "--optim.norm_in_backward=true" in in_backward["overrides"], in_backward["overrides"]
    assert in_backward["results"][0]["optim"] == "dgclip"
    trainer = records["trainer_muon"]["result"]["results"][0]
    assert trainer["optim"] == "muon" and set(trainer["breakdown_ms"]) == {"data", "fwd_bwd", "optimizer", "host_read"}
    assert records["cuda_tests"]["result"]["skipped"] > 0 and not records["cuda_tests"]["result"]["failed_tests"]
    summary = (tmp_path / "summary.md").read_text()
    assert "| trainer_adamw | ok |" in summary and "| kernels_bench | ok |" in summary
    assert "delta-GClip + momentum, whole step" in summary and "| muon --train.eval_tokens=128 |" in summary


def test_stages_that_do_not_fit_the_budget_are_skipped(tmp_path):
    assert run.main(["--dry-run", "--out", str(tmp_path), "--budget-s", "0"]) == 0
    records = stage_records(tmp_path)
    assert {r["status"] for r in records.values()} == {"skipped", "not available"}
    assert records["cuda_tests"]["reason"].startswith("budget: 0 s left")
    summary = (tmp_path / "summary.md").read_text()
    assert "| cuda_tests | skipped |" in summary and "Dry run" in summary


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_without_cuda_only_the_dry_run_runs(tmp_path, capsys):
    assert run.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
