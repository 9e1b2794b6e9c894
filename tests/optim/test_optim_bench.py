"""The optimizer benchmark runs on CPU at a small size and writes its JSON report."""
from __future__ import annotations

import json

import pytest
import torch

import optim

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


def test_anchor_parameter_set_is_untied_gpt2_124m_without_biases():
    shapes = bench.shapes_of(**bench.SIZES["anchor"])
    assert len(shapes) == 74
    assert round(sum(torch.Size(s).numel() for _, s in shapes) / 1e5) / 10 == 162.2
    assert {"embed.weight", "head.weight", "blocks.11.norm2.weight"} <= {n for n, _ in shapes}


@pytest.mark.slow
def test_dgclip_comparison_times_the_whole_step_against_torch(tmp_path):
    named = bench.parameter_set(n_layer=1, d=16, vocab=64, device="cpu", untied=True)
    report = bench.compare_dgclip(named, steps=1, warmup=1)
    assert set(report["step_ms"]) == {"ours", "torch_eager_foreach", "torch_compile", "fused_adamw",
                                      "copy_floor_6_passes"}  # + ours_cuda_graph, torch_compile_cuda_graph on CUDA
    assert all(ms > 0 for ms in report["step_ms"].values()) and report["vs_ours"]["ours"] == 1.0


def test_dgclip_comparison_without_compile_and_captured_slot_on_cpu(tmp_path):
    report = bench.main(["--size", "small", "--steps", "1", "--warmup", "0", "--device", "cpu", "--only", "dgclip",
                         "--compare", "--no-compile", "--captured", "--out", str(tmp_path / "o.json")])
    assert set(report["dgclip_comparison"]["step_ms"]) == {"ours", "torch_eager_foreach", "fused_adamw",
                                                           "copy_floor_6_passes"}
    assert report["captured"] == "not available: needs CUDA"
    assert "captured_step_ms" not in report["results"]["dgclip"]


def test_foreach_baseline_is_the_same_update_as_ours():
    named = bench.parameter_set(n_layer=1, d=16, vocab=64, device="cpu", untied=True)
    ours = optim.DeltaGClip([p for _, p in named], lr=0.1, gamma=1e-3, delta=0.1, momentum=0.9)
    params = [p.detach().clone() for _, p in named]
    momenta = [torch.zeros_like(p) for p in params]
    for _ in range(2):
        ours.step()
        bench.dgclip_momentum_foreach(params, [p.grad for _, p in named], momenta, lr=0.1, gamma=1e-3, delta=0.1,
                                      momentum=0.9)
    for (_, p), q in zip(named, params):
        torch.testing.assert_close(p.detach(), q)


def test_benchmark_keeps_existing_results_prints_a_header_and_overwrites_only_when_asked(tmp_path, monkeypatch,
                                                                                           capsys):
    """A run from a clean clone must not rewrite the committed results: the default name, if taken, becomes a
    timestamped one (ignored by git); an explicit --out that exists needs --overwrite."""
    import subprocess
    from pathlib import Path
    monkeypatch.chdir(tmp_path)
    committed = tmp_path / "benchmarks" / "results" / "optim-step-cpu-small.json"
    committed.parent.mkdir(parents=True)
    committed.write_text("committed\n")
    args = ["--size", "small", "--steps", "1", "--warmup", "0", "--device", "cpu", "--ns-dtype", "float32",
            "--threads", "1", "--only", "adamw"]
    bench.main(args)
    printed = capsys.readouterr().out
    assert printed.startswith("optim.bench: size small (9 tensors, 0.1M elements) on cpu (")
    assert "1 torch threads; parameters, gradients and state float32, Newton-Schulz float32" in printed
    assert committed.read_text() == "committed\n"
    fresh, = [p for p in committed.parent.iterdir() if p != committed]
    assert fresh.name.startswith("optim-step-cpu-small-") and f"wrote {fresh.relative_to(tmp_path)}" in printed
    repo = Path(bench.__file__).resolve().parent.parent
    ignored = subprocess.run(["git", "check-ignore", "-q", f"benchmarks/results/{fresh.name}"], cwd=repo)
    assert ignored.returncode == 0  # a clean clone stays clean
    with pytest.raises(SystemExit, match=r"--out .* exists; pass --overwrite"):
        bench.main([*args, "--out", str(committed)])
    bench.main([*args, "--out", str(committed), "--overwrite"])
    assert json.loads(committed.read_text())["results"]["adamw"]["step_ms"] > 0


def test_variant1_entry_times_s3cg_variant1_against_variant2(tmp_path):
    report = bench.main(["--size", "small", "--steps", "1", "--warmup", "1", "--device", "cpu", "--ns-dtype",
                         "float32", "--threads", "1", "--only", "clipped_scion", "clipped_scion_v1",
                         "--out", str(tmp_path / "v1.json")])
    assert set(report["results"]) == {"clipped_scion", "clipped_scion_v1"}
    assert "clipped_scion_v1" in report["clipping_overhead_vs_unclipped"]


def test_norm_estimate_timing_reports_ratios():
    results = bench.time_norm_estimate(shapes=((8, 12),), repeats=1)
    entry = results["8x12"]
    assert set(entry["ms"]) == {"squaring_12", "power_iteration_20", "newton_schulz5_bf16", "newton_schulz5_fp32"}
    assert entry["squaring_vs_newton_schulz5_fp32"] > 0
