"""Seeds grouped into settings, sweep-axis detection, and the report files on synthetic runs (no training)."""
from __future__ import annotations

import pytest

from experiments.grouping import differing_keys, group_runs, sweep_axis
from experiments.report import main as report_main, write_report
from experiments.runfiles import Run
from tests.experiments.fake_runs import write_run


def _load(*paths):
    return [Run.load(p) for p in paths]


def test_seeds_of_one_setting_form_one_group(tmp_path):
    runs = _load(write_run(tmp_path / "adamw-s0", seed=0), write_run(tmp_path / "adamw-s1", seed=1),
                 write_run(tmp_path / "dgclip-s0", optim="dgclip", lr=0.5, seed=0))
    assert differing_keys(runs) == ["optim.lr", "optim.name"]  # seed and out_dir never count
    groups = group_runs(runs)
    assert [(g.label, [r.name for r in g.runs]) for g in groups] == [
        ("adamw", ["adamw-s0", "adamw-s1"]), ("dgclip", ["dgclip-s0"])]


def test_a_comparison_with_one_lr_per_optimizer_is_not_a_sweep(tmp_path):
    runs = _load(write_run(tmp_path / "adamw"), write_run(tmp_path / "dgclip", optim="dgclip", lr=0.5))
    assert sweep_axis(group_runs(runs)) is None


def test_sweep_axis_is_the_key_varying_within_an_optimizer(tmp_path):
    runs = _load(*(write_run(tmp_path / f"cs-{rho}", optim="clipped_scion", extra_optim={"rho": rho})
                   for rho in (600, 150, 2400)),
                 *(write_run(tmp_path / f"ucs-{rho}", optim="unconstrained_clipped_scion", extra_optim={"rho": rho})
                   for rho in (150, 600)))
    axis = sweep_axis(group_runs(runs))
    assert axis.key == "optim.rho" and axis.numeric
    assert {label: [x for x, _ in points] for label, points in axis.lines.items()} == {
        "clipped_scion": [150, 600, 2400], "unconstrained_clipped_scion": [150, 600]}


def test_categorical_sweep_axis(tmp_path):
    runs = _load(*(write_run(tmp_path / w, extra_optim={"gr": {"warmup": w}}) for w in ("none", "zero", "r")))
    axis = sweep_axis(group_runs(runs), "optim.gr.warmup")
    assert not axis.numeric and [x for x, _ in axis.lines["adamw"]] == ["none", "r", "zero"]


def test_report_writes_markdown_table_and_pngs(tmp_path):
    runs = [write_run(tmp_path / f"ucs-rho={rho}", optim="unconstrained_clipped_scion", clip=True,
                      extra_optim={"rho": rho}, losses=[10 - s * rho / 10000 for s in range(1, 11)])
            for rho in (150, 600, 2400)]
    report = write_report(runs, tmp_path / "report", smooth=0.0, target_loss=9.6, title="rho sweep")
    text = report.read_text()
    assert text.startswith("# rho sweep")
    for png in ("loss_vs_step.png", "loss_vs_tokens.png", "loss_vs_time.png", "grad_norm_clip.png", "sweep.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000 and f"({png})" in text
    rows = [line for line in text.splitlines() if line.startswith("| ucs-rho=")]
    assert len(rows) == 3
    # train loss 10 - s*rho/1e4 reaches 9.6 at s=2 (rho 2400) and s=7 (rho 600), never for rho 150 (final 9.85);
    # val loss (train + 0.1 at steps 5 and 10) at step 5 (rho 2400: 8.9) and 10 (rho 600: 9.5), never for rho 150
    assert "| ucs-rho=2400 | unconstrained_clipped_scion | rho=2400 | 10 | 7.700 | 7.700 (10) | 7.600 | 5 | 2 |" in text
    reached = {r.split("|")[1].strip(): (r.split("|")[8].strip(), r.split("|")[9].strip()) for r in rows}
    assert reached == {"ucs-rho=150": ("–", "–"), "ucs-rho=600": ("10", "7"), "ucs-rho=2400": ("5", "2")}
    assert "## Sweep over `optim.rho`" in text


def test_report_cli_names_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert report_main([str(tmp_path), "--out", str(tmp_path / "r")]) == 2
    assert "no metrics.jsonl" in capsys.readouterr().err


def test_labels_leave_out_schema_defaults_and_put_the_optimizer_first():
    from experiments.grouping import describe

    assert describe({"optim.delta": 0.0, "optim.lr": 0.3, "optim.name": "dgclip"}) == "dgclip, lr=0.3"
    assert describe({"optim.gr.enabled": True, "optim.gr.warmup": "none"}) == "gr.enabled=True"


def test_mixed_reports_leave_unset_keys_out_of_the_setting_and_legends_use_run_names(tmp_path):
    from experiments.grouping import describe
    assert describe({"optim.name": "adamw", "optim.momentum": None, "data.hellaswag": None}) == "adamw"
    runs = _load(write_run(tmp_path / "adamw-s0", seed=0), write_run(tmp_path / "adamw-s1", seed=1),
                 write_run(tmp_path / "sgd-s0", optim="sgd", lr=0.05, seed=0, extra_optim={"momentum": 0.9}))
    groups = group_runs(runs)
    assert [g.legend for g in groups] == ["adamw (2 seeds)", "sgd-s0"]  # a lone run: its name, as in the table
    text = write_report([r.path for r in runs], tmp_path / "report").read_text()
    assert "| adamw-s0 | adamw | – |" in text and "| sgd-s0 | sgd | lr=0.05, momentum=0.9 |" in text
    assert "None" not in text


def test_loss_plot_frames_the_raw_curve_and_labels_a_lone_final_evaluation(tmp_path, monkeypatch):
    """The y-range holds the raw (noisy) train loss, not only its EMA; a run evaluated only at its end is one
    dot with its value written beside it and a hint for a curve."""
    from experiments import plots
    from experiments.stats import smoothing_for
    assert smoothing_for(0.9, [30, 200]) == pytest.approx(2 / 3) and smoothing_for(0.9, [100, 200]) == 0.9
    noisy = [6.0 + (0.8 if s % 2 else -0.8) for s in range(30)]
    run = Run.load(write_run(tmp_path / "noisy", steps=30, losses=noisy, val_every=100))
    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    plots.plot_losses(group_runs([run]), "step", tmp_path / "x.png", smoothing_for(0.9, [30]))
    ax_train, ax_val = figures[0].axes
    low, high = ax_train.get_ylim()
    assert low <= 5.2 and high >= 6.8
    assert "only at their end" in ax_val.get_title() and [t.get_text() for t in ax_val.texts] == ["6.900"]
    assert ax_train.get_legend().get_texts()[0].get_text() == "noisy"
