"""Command-line parsing of compare and sweep: run names, overrides per optimizer, errors that name the culprit."""
from __future__ import annotations

from pathlib import Path

import pytest

from configs.base import ConfigError
from experiments import cli, compare, sweep
from experiments.launch import RunSpec, is_complete, run_all


def test_per_optimizer_overrides_apply_to_variants_bare_name_first():
    sets = ["adamw@gr:optim.gr.enabled=true", "adamw:optim.lr=0.01", "dgclip:--optim.lr=0.5"]
    assert cli.parse_sets(sets, ["adamw", "adamw@gr", "dgclip"]) == {
        "adamw": ["--optim.lr=0.01"], "adamw@gr": ["--optim.lr=0.01", "--optim.gr.enabled=true"],
        "dgclip": ["--optim.lr=0.5"]}


@pytest.mark.parametrize("item, message", [("sgd:optim.lr=1", "'sgd' is not one of"),
                                           ("optim.lr=1", "expected OPTIMIZER:section.key=value"),
                                           ("adamw:lr=1", "expected section.key=value")])
def test_bad_set_names_the_item(item, message):
    with pytest.raises(ConfigError, match=message):
        cli.parse_sets([item], ["adamw"])


def test_compare_specs_one_directory_per_variant_and_seed(tmp_path):
    specs = cli.with_seeds(compare.build_specs(["adamw", "adamw@gr"], ["adamw@gr:optim.gr.enabled=true"],
                                               ["--train.steps=5"], tmp_path), [0, 1])
    assert [s.name for s in specs] == ["adamw-s0", "adamw-s1", "adamw-gr-s0", "adamw-gr-s1"]
    assert specs[3].out_dir == tmp_path / "adamw-gr-s1"
    assert specs[3].overrides == ["--optim.name=adamw", "--train.steps=5", "--optim.gr.enabled=true",
                                  "--train.seed=1"]


def test_sweep_specs_cover_the_grid_named_by_value(tmp_path):
    grid = sweep.parse_grid(["optim.rho=150,600", "--optim.lr=1e-3"])
    specs = sweep.build_specs(grid, ["clipped_scion"], [], [], tmp_path)
    assert [s.name for s in specs] == ["clipped_scion-rho=150-lr=1e-3", "clipped_scion-rho=600-lr=1e-3"]
    assert specs[0].overrides == ["--optim.name=clipped_scion", "--optim.rho=150", "--optim.lr=1e-3"]
    assert sweep.short_names(["optim.gr.r", "model.r", "optim.lr"]) == {
        "optim.gr.r": "optim.gr.r", "model.r": "model.r", "optim.lr": "lr"}


@pytest.mark.parametrize("items, message", [(["rho=1,2"], "expected section.key"), (["optim.rho="], "empty list"),
                                            (["optim.rho=1", "optim.rho=2"], "given twice")])
def test_bad_sweep_axes_are_named(items, message):
    with pytest.raises(ConfigError, match=message):
        sweep.parse_grid(items)


def test_invalid_run_config_fails_before_anything_runs(tmp_path):
    spec = RunSpec("bad", tmp_path / "bad", ["--optim.name=adamw", "--optim.gamma=3"])
    with pytest.raises(ConfigError, match=r"run 'bad'.*optim.gamma"):
        run_all([spec], "configs/tiny.toml")
    assert not (tmp_path / "bad").exists()


def test_compare_cli_exits_2_on_a_bad_override(tmp_path, capsys):
    argv = ["--config", "configs/tiny.toml", "--optims", "adamw", "--out", str(tmp_path), "--", "--train.stepz=3"]
    assert cli.main_guard(compare.main, argv) == 2
    assert "train.stepz" in capsys.readouterr().err


def test_a_run_is_complete_only_with_its_final_checkpoint_and_metrics(tmp_path):
    assert not is_complete(tmp_path, 5)
    (tmp_path / "metrics.jsonl").write_text('{"step": 5}\n')
    assert not is_complete(tmp_path, 5)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "step_0000005.pt").write_bytes(b"x")
    assert is_complete(tmp_path, 5) and not is_complete(tmp_path, 6)


def test_dry_run_prints_commands_and_runs_nothing(tmp_path, capsys):
    argv = ["--config", "configs/tiny.toml", "--optims", "adamw,muon", "--out", str(tmp_path), "--nproc", "2",
            "--dry-run", "--wandb-group", "cmp1"]
    assert compare.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("torch.distributed.run --standalone --nproc_per_node=2") == 2
    assert "--log.wandb=true --log.wandb_group=cmp1" in out and not list(Path(tmp_path).iterdir())


def test_sweep_dry_run_covers_grid_times_optimizers_times_seeds(tmp_path, capsys):
    argv = ["--config", "configs/tiny.toml", "--optims", "clipped_scion,unconstrained_clipped_scion",
            "optim.rho=150,600", "optim.lr=1e-3", "--seeds", "0,1", "--out", str(tmp_path), "--dry-run"]
    assert sweep.main(argv) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[dry-run]")]
    assert len(commands) == 2 * 2 * 2
    assert any(c.endswith(f"--train.out_dir={tmp_path}/unconstrained_clipped_scion-rho=600-lr=1e-3-s1")
               for c in commands)


def test_sweep_rejects_optimizers_given_twice(tmp_path):
    argv = ["--config", "configs/tiny.toml", "--optims", "adamw", "optim.name=adamw,muon", "--out", str(tmp_path)]
    with pytest.raises(ConfigError, match="not both"):
        sweep.main(argv)


def test_bad_jobs_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        compare.main(["--config", "configs/tiny.toml", "--optims", "adamw", "--jobs", "0"])
    assert exit_info.value.code == 2 and "--jobs must be >= 1" in capsys.readouterr().err


def test_run_all_names_the_live_log_and_reports_progress_and_the_result(tmp_path, monkeypatch):
    """compare's console: where each run's output goes, its step and losses while it runs and when it ends."""
    import sys

    from experiments import launch
    script = ("import json, sys, time, pathlib; out = pathlib.Path(sys.argv[1]); print('training', flush=True)\n"
              "for s in (1, 2):\n"
              "    with open(out / 'metrics.jsonl', 'a') as f:\n"
              "        f.write(json.dumps({'step': s, 'train_loss': 7.0 - s, **({'val_loss': 6.5} if s == 2 else {})})"
              " + '\\n')\n"
              "    time.sleep(0.6)\n")
    monkeypatch.setattr(launch, "command", lambda spec, config, nproc=0: [sys.executable, "-c", script,
                                                                         str(spec.out_dir)])
    lines = []
    spec = RunSpec("a", tmp_path / "a", ["--train.steps=4"])
    [result] = run_all([spec], "configs/tiny.toml", log=lines.append, progress_every_s=0.3)
    assert result.status == "stopped"  # exit 0 before the final checkpoint
    assert lines[0] == f"[run] a -> {tmp_path / 'a'} (live log: {tmp_path / 'a' / 'launch.log'})"
    assert any(line.startswith("[..] a: step ") for line in lines[1:-1])
    assert lines[-1].startswith("[stopped] a in ") and lines[-1].endswith(
        "(exit 0): step 2/4, train loss 5.000, val loss 6.500 (step 2)")
    assert (tmp_path / "a" / "launch.log").read_text() == "training\n"
