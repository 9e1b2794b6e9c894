"""The benchmark CLI end to end on CPU at the tiny size: Triton kernels in the interpreter and the torch eager
path in one run, so a GPU run of the same command needs no debugging."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import optim.kernel_api  # noqa: F401  loads kernels/ as clipgpt_kernels
from clipgpt_kernels.bench_cases import KERNEL_NAMES, parameter_shapes

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_parameter_sets_match_the_presets():
    assert len(parameter_shapes("gpt2-124m")) == 49
    assert sum(a * b for a, b in parameter_shapes("gpt2-124m")) == 123_568_128
    assert len(parameter_shapes("gpt2-124m-classic")) == 148
    assert 1.0e9 < sum(a * b for a, b in parameter_shapes("gpt2-1b")) < 1.1e9


def test_bench_cli_tiny_interpreter_and_torch(tmp_path):
    out = tmp_path / "kernels-test.json"
    cmd = [sys.executable, "-m", "kernels.bench", "--model", "tiny", "--dtype", "fp32", "bf16", "--backend",
           "triton", "torch", "--reps", "1", "--warmup", "0", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=dict(os.environ, TRITON_INTERPRET="1"), capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "clip_step" in proc.stdout and "wrote" in proc.stdout
    report = json.loads(out.read_text())
    assert report["device_type"] == "cpu" and report["torch"] and report["triton"] and report["triton_interpret"]
    assert [(r["model"], r["dtype"]) for r in report["runs"]] == [("tiny", "fp32"), ("tiny", "bf16")]
    for run in report["runs"]:
        rows = {(r["kernel"], r["impl"]): r for r in run["results"]}
        assert rows[("copy", "torch")]["GBps"] > 0
        for kernel in KERNEL_NAMES:
            for impl in ("triton", "torch"):
                row = rows[(kernel, impl)]
                assert row["error"] is None and row["median_ms"] > 0 and row["bytes"] > 0, row
                assert row["pct_of_copy"] > 0
            assert rows[(kernel, "triton")]["speedup_vs_torch"] > 0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bench_cli_on_gpu(tmp_path):
    """do_bench and do_bench_cudagraph paths of the CLI, at the tiny size."""
    out = tmp_path / "kernels-gpu-test.json"
    cmd = [sys.executable, "-m", "kernels.bench", "--model", "tiny", "--dtype", "bf16", "--backend", "triton",
           "torch", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = {(r["kernel"], r["impl"]): r for r in json.loads(out.read_text())["runs"][0]["results"]}
    for kernel in KERNEL_NAMES:
        assert rows[(kernel, "triton")]["error"] is None, rows[(kernel, "triton")]
        assert rows[(kernel, "triton")]["cuda_graph_median_ms"] > 0


def test_table_shows_only_columns_with_values():
    """On CPU without Triton rows there are no CUDA-graph times and no speedups: those columns are left out."""
    from clipgpt_kernels.bench import format_table
    row = dict(kernel="norm", impl="torch", median_ms=1.0, cuda_graph_median_ms=None, GBps=2.0, pct_of_copy=50.0,
               error=None)
    run = dict(model="tiny", dtype="fp32", num_tensors=3, num_elements=1e6, copy_GBps=4.0,
               results=[row, dict(row, impl="compile")])
    header = format_table(run).splitlines()[1]
    assert "GB/s" in header and "%copy" in header
    assert "graph ms" not in header and "x torch" not in header and "x compile" not in header
    run["results"].append(dict(row, impl="triton", speedup_vs_torch=1.5, cuda_graph_median_ms=0.5))
    assert "x torch" in format_table(run) and "graph ms" in format_table(run) and "x compile" not in format_table(run)
