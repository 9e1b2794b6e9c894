"""The training-throughput benchmark runs end to end on CPU, so its GPU run needs no debugging."""

import json

import pytest

from trainer import bench

pytestmark = pytest.mark.slow


def test_bench_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "train-cpu.json"
    assert bench.main(["--config", "configs/tiny.toml", "--optims", "adamw,dgclip", "--steps", "3", "--warmup", "1",
                       "--out", str(out), "--train.eval_tokens=2048"]) == 0
    data = json.loads(out.read_text())
    assert [r["optim"] for r in data["results"]] == ["adamw", "dgclip"]
    assert data["results"][0]["step_time_vs_baseline"] == 1.0
    assert all(r["tokens_per_s"] > 0 and r["steps_timed"] == 2 for r in data["results"])
    assert data["run_info"]["versions"]["torch"]
    assert "tokens/s" in capsys.readouterr().out


def test_bench_compares_parallel_layouts_on_cpu(tmp_path):
    """--parallel: each layout under torchrun (gloo here), one micro-batch per rank, ratios to the first layout."""
    out = tmp_path / "train-parallel-cpu.json"
    assert bench.main(["--config", "configs/tiny.toml", "--parallel", "ddp,fsdp,hsdp", "--nproc", "4", "--steps",
                       "3", "--warmup", "1", "--micro-batch", "1", "--out", str(out), "--train.eval_tokens=1024",
                       "--model.block_size=32"]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [(r["parallel"], r["nproc"]) for r in rows] == [("ddp", 4), ("fsdp", 4), ("hsdp", 4)]
    assert rows[2]["shard_degree"] == 2 and rows[0]["tokens_per_s_vs_first_layout"] == 1.0
    assert all(r["tokens_per_s"] > 0 and r["tokens_per_step"] == 4 * 32 for r in rows)
    losses = [r["final_train_loss"] for r in rows]  # the same run in three layouts
    assert max(losses) - min(losses) < 1e-3
