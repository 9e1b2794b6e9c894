"""The default tiny preset, unchanged, trains at world sizes 1, 2 and 4 to the same losses; a 5-step smoke run of
the preset starts with one warning instead of a refusal (slow: end-to-end, gloo)."""

from __future__ import annotations

import pytest

from tests.helpers import losses, metrics, run_train

pytestmark = pytest.mark.slow

# The preset's own batch (8 sequences, micro-batch 8): 2 ranks get micro-batches of 4, 4 ranks of 2, silently.
SHORT = ("--train.steps=3", "--train.eval_tokens=1024")


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("world1")
    proc = run_train(f"--train.out_dir={out}", *SHORT)
    assert "warning" not in proc.stderr
    return out


@pytest.mark.parametrize("nproc", [2, 4])
def test_default_preset_matches_one_process(one_process, tmp_path, nproc):
    proc = run_train(f"--train.out_dir={tmp_path}", *SHORT, nproc=nproc)
    assert "warning" not in proc.stderr, proc.stderr[-3000:]  # micro-batch 8 above the 8/nproc share: that share
    assert "grad accumulation 1" in proc.stdout
    assert losses(tmp_path) == pytest.approx(losses(one_process), rel=1e-5, abs=1e-5)
    assert metrics(tmp_path)[-1]["val_loss"] == pytest.approx(metrics(one_process)[-1]["val_loss"], rel=1e-5)


def test_batch_not_divisible_by_world_size_is_refused(tmp_path):
    proc = run_train(f"--train.out_dir={tmp_path}", *SHORT, "--train.batch_size=6", nproc=4, check=False)
    assert proc.returncode != 0
    assert "train.batch_size (6) must be a multiple of the world size (4)" in proc.stderr
    assert not (tmp_path / "metrics.jsonl").exists()


def test_five_step_smoke_run_of_the_preset(tmp_path):
    proc = run_train(f"--train.out_dir={tmp_path}", "--train.steps=5", "--train.warmup_steps=10",
                     "--train.warmdown_frac=0.2", "--train.eval_tokens=1024")  # the preset's schedule
    assert proc.stderr.count("warning:") == 1 and "train.warmup_steps (10)" in proc.stderr
    assert [m["step"] for m in metrics(tmp_path)] == [1, 2, 3, 4, 5]
    # shared in proportion: 3 warmup steps, then 2 down, so the last step runs below the peak
    assert [m["lr"] for m in metrics(tmp_path)] == pytest.approx([3e-3 * k for k in (1 / 3, 2 / 3, 1, 1, 0.5)])
