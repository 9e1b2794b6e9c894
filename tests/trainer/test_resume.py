"""Resume end to end: unreadable checkpoints, train.resume=fresh, changed settings refused or applied,
metrics of killed attempts, two writers on one run directory."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from tests.helpers import REPO_ROOT, env, losses, metrics, run_train, train_cmd
from tests.helpers import main_in_process as _main
from trainer import checkpoint

pytestmark = pytest.mark.slow




@pytest.fixture(scope="module")
def two_steps(tmp_path_factory):
    """A run of 2 steps with its checkpoint, copied by each test that resumes it."""
    out = tmp_path_factory.mktemp("base") / "run"
    assert _main(out, "--train.steps=2", "--train.checkpoint_every=2") == 0
    return out


@pytest.fixture
def run_dir(two_steps, tmp_path):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(two_steps, out)
    return out


def _sizes(out):
    return {p.name: p.stat().st_size for p in checkpoint.checkpoint_dir(out).iterdir()}


def test_all_checkpoints_unreadable_stops_and_fresh_start_is_explicit(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(out, "--train.steps=4", "--train.checkpoint_every=2") == 0
    for _, path in checkpoint.list_checkpoints(out):
        with open(path, "r+b") as f:
            f.truncate(1000)
    before = _sizes(out)
    capsys.readouterr()
    assert _main(out, "--train.steps=6", "--train.checkpoint_every=2") == 1
    err = capsys.readouterr().err
    assert "holds checkpoints but none can be loaded" in err and "--train.resume=fresh" in err
    assert "step_0000002.pt: " in err and "step_0000004.pt: " in err
    assert _sizes(out) == before, "an unreadable checkpoint was touched"

    assert _main(out, "--train.steps=6", "--train.checkpoint_every=2", "--train.resume=fresh") == 0
    assert "moved to" in capsys.readouterr().out
    assert [s for s, _ in checkpoint.list_checkpoints(out)] == [4, 6]  # the new run's, none deleted by old ones
    archived = next(checkpoint.checkpoint_dir(out).glob("replaced-*"))
    assert sorted(p.name for p in archived.glob("*.pt")) == ["step_0000002.pt", "step_0000004.pt"]
    assert [r["step"] for r in metrics(out)] == list(range(1, 7))


def test_unreadable_newest_is_moved_aside_and_rotation_keeps_valid_ones(tmp_path, capsys):
    out = tmp_path / "run"
    assert _main(out, "--train.steps=4", "--train.checkpoint_every=2") == 0
    newest = checkpoint.checkpoint_dir(out) / "step_0000004.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit in the tensor data
    newest.write_bytes(bytes(data))
    with pytest.warns(UserWarning, match="checksum mismatch.*moved it aside as step_0000004.pt.corrupt"):
        assert _main(out, "--train.steps=8", "--train.checkpoint_every=2", "--train.keep_checkpoints=1") == 0
    assert "resumed from" in capsys.readouterr().out
    names = sorted(p.name for p in checkpoint.checkpoint_dir(out).iterdir())
    assert names == ["step_0000004.pt.corrupt", "step_0000004.pt.corrupt.sha256", "step_0000008.pt",
                     "step_0000008.pt.sha256"]
    assert [r["step"] for r in metrics(out)] == list(range(1, 9))


def test_run_changing_settings_are_refused_listing_each(run_dir, capsys):
    config_before = (run_dir / "config.json").read_text()
    assert _main(run_dir, "--train.steps=4", "--optim.lr=1e-2", "--optim.weight_decay=0.5", "--optim.beta1=0.5") == 1
    err = capsys.readouterr().err
    for line in ("optim.lr: 0.003 -> 0.01", "optim.weight_decay: 0.0 -> 0.5", "optim.beta1: 0.9 -> 0.5"):
        assert line in err
    assert "train.steps" not in err and "--train.resume_changes=apply" in err
    assert (run_dir / "config.json").read_text() == config_before
    assert [r["step"] for r in metrics(run_dir)] == [1, 2]


def test_resumable_settings_apply_without_opt_in(run_dir, capsys):
    assert _main(run_dir, "--train.steps=3", "--train.log_every=2") == 0
    assert "train.steps: 2 -> 3" in capsys.readouterr().out
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3]
    change, = [json.loads(line) for line in (run_dir / "config_changes.jsonl").read_text().splitlines()]
    assert change["step"] == 2 and change["changes"]["train.steps"] == [2, 3]


def test_applied_changes_reach_the_optimizer(run_dir, tmp_path):
    import shutil
    unchanged = tmp_path / "unchanged"
    shutil.copytree(run_dir, unchanged)
    assert _main(unchanged, "--train.steps=4") == 0
    assert _main(run_dir, "--train.steps=4", "--optim.lr=1e-2", "--optim.weight_decay=0.5", "--optim.beta1=0.5",
                 "--train.resume_changes=apply") == 0
    rows = metrics(run_dir)
    assert [r["lr"] for r in rows] == [0.003, 0.003, 0.01, 0.01]
    assert losses(run_dir)[:3] == losses(unchanged)[:3] and losses(run_dir)[3] != losses(unchanged)[3]
    groups = checkpoint.latest(run_dir)[0]["optimizer"]["param_groups"]
    # embed, hidden, vector (vectors take no weight decay)
    assert [(g["weight_decay"], g["betas"][0]) for g in groups] == [(0.5, 0.5), (0.5, 0.5), (0.0, 0.5)]
    change = json.loads((run_dir / "config_changes.jsonl").read_text().splitlines()[-1])
    assert change["resume_changes"] == "apply" and change["changes"]["optim.lr"] == [0.003, 0.01]


def test_an_applied_optimizer_setting_change_keeps_the_optimizer_state(run_dir, capsys):
    """optim.max_grad_norm is a setting a loaded AdamW state must match; an applied change takes it, keeps the
    moments (no restart of the optimizer state)."""
    assert _main(run_dir, "--train.steps=3", "--optim.max_grad_norm=1.0", "--train.resume_changes=apply") == 0
    out = capsys.readouterr().out
    assert "optim.max_grad_norm" in out and "starts afresh" not in out
    state = checkpoint.latest(run_dir)[0]["optimizer"]
    assert all(g["max_grad_norm"] == 1.0 for g in state["param_groups"])
    assert all(s["step"].item() == 3 for s in state["state"].values())


def test_optimizer_change_needs_the_opt_in_and_keeps_the_weights(run_dir, capsys):
    assert _main(run_dir, "--train.steps=3", "--optim.name=muon") == 1
    assert "optim.name: 'adamw' -> 'muon'" in capsys.readouterr().err
    assert _main(run_dir, "--train.steps=3", "--optim.name=muon", "--train.resume_changes=apply") == 0
    out = capsys.readouterr().out
    assert "resumed from" in out and "optimizer state starts afresh" in out
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3]
    assert checkpoint.latest(run_dir)[0]["config"]["optim"]["name"] == "muon"


def test_batch_change_applied_keeps_the_data_position(run_dir, capsys):
    assert _main(run_dir, "--train.steps=3", "--train.batch_size=16", "--train.resume_changes=apply") == 0
    assert "train.batch_size: 8 -> 16" in capsys.readouterr().out
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3]
    assert checkpoint.latest(run_dir)[0]["loader"]["pos"] == 2 * 8 * 64 + 16 * 64  # two steps of 8, one of 16


def test_restarted_generation_resumes_even_under_resume_fresh(run_dir, monkeypatch):
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")  # what torchrun sets after a worker failure
    assert _main(run_dir, "--train.steps=3", "--train.resume=fresh") == 0
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3]
    assert not list(checkpoint.checkpoint_dir(run_dir).glob("replaced-*"))


def test_model_shape_change_is_one_line_even_with_apply(run_dir, capsys):
    assert _main(run_dir, "--train.steps=3", "--model.n_embd=32", "--train.resume_changes=apply") == 1
    err = capsys.readouterr().err
    assert "the model's shape changed" in err and "Traceback" not in err
    assert [r["step"] for r in metrics(run_dir)] == [1, 2]


def test_torn_metrics_line_is_dropped_with_a_warning(run_dir):
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "train_loss": 9.8')  # a crash in the middle of a write
    with pytest.warns(UserWarning, match="metrics.jsonl: dropping line 3"):
        assert _main(run_dir, "--train.steps=3") == 0
    assert [r["step"] for r in metrics(run_dir)] == [1, 2, 3]


def test_two_writers_and_kill_9_before_the_first_checkpoint(tmp_path):
    """A second run on a busy directory is refused at once; after kill -9 a fresh start has no duplicate rows."""
    out = tmp_path / "run"
    first = subprocess.Popen(train_cmd(f"--train.out_dir={out}", "--train.steps=500"), cwd=REPO_ROOT, env=env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while (not (out / "metrics.jsonl").exists() or len(metrics(out)) < 3) and time.time() < deadline:
            assert first.poll() is None, "the first run ended early"
            time.sleep(0.05)
        second = run_train(f"--train.out_dir={out}", "--train.steps=500", check=False, timeout=120)
        assert second.returncode == 1
        assert f"is in use by another run (pid {first.pid} on host" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(metrics(out)) >= 3 and not checkpoint.list_checkpoints(out)
    run_train(f"--train.out_dir={out}", "--train.steps=2")
    assert [r["step"] for r in metrics(out)] == [1, 2]
