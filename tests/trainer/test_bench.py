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
