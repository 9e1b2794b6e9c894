"""The optimizer benchmark runs on CPU at a small size and writes its JSON report."""
from __future__ import annotations

import json

from optim import bench


def test_benchmark_runs_small_on_cpu(tmp_path):
    out = tmp_path / "optim.json"
    report = bench.main(["--size", "small", "--steps", "1", "--warmup", "1", "--device", "cpu", "--ns-dtype",
                         "float32", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert set(saved["results"]) == set(report["results"]) and "adamw" in saved["results"]
    assert all(entry["step_ms"] > 0 for entry in saved["results"].values())
    assert saved["results"]["adamw"]["vs_fused_adamw"] == 1.0
    assert set(saved["clipping_overhead_vs_unclipped"]) == {"unconstrained_clipped_scion", "clipped_scion"}
