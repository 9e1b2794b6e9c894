"""What a run says at its start and end, and a re-run of a finished run: one line, nothing changed."""

from __future__ import annotations

import io
import sys

import pytest

from tests.helpers import main_in_process as _main
from tests.helpers import run_train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A complete 2-step run and what it printed."""
    out = tmp_path_factory.mktemp("finished") / "run"
    capture = pytest.MonkeyPatch()
    buf = io.StringIO()
    capture.setattr(sys, "stdout", buf)
    try:
        assert _main(out, "--train.steps=2") == 0
    finally:
        capture.undo()
    return out, buf.getvalue()


def test_a_run_names_its_directory_at_the_start_and_summarizes_at_the_end(finished):
    out, printed = finished
    assert f"run {out}: fresh run, training to step 2; metrics -> {out / 'metrics.jsonl'}" in printed
    tail = printed[printed.index("run complete:"):]
    assert tail.startswith("run complete: 2/2 steps, 1,024 tokens (2 steps in ")  # 8 sequences x 64 tokens a step
    assert "  val loss: final " in tail and "(step 2), best " in tail
    assert f"  newest checkpoint: {out / 'checkpoints' / 'step_0000002.pt'}" in tail
    assert f"  metrics: {out / 'metrics.jsonl'}" in tail


def _snapshot(out):
    return {p.relative_to(out): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_rerunning_a_finished_run_changes_nothing_and_says_so(finished, capsys):
    out, _ = finished
    before = _snapshot(out)
    assert _main(out, "--train.steps=2") == 0  # the same command again: done, success
    said = capsys.readouterr()
    assert f"{out}: already complete at 2/2; raise --train.steps or use a new --train.out_dir" in said.out
    assert "resumed from" not in said.out and "settings changed" not in said.out + said.err
    # the README's sample command on the finished quickstart run: nothing runs, so it is an error (exit 1)
    assert _main(out, "--train.steps=2", "--train.sample_every=1") == 1
    said = capsys.readouterr()
    assert "already complete at 2/2" in said.err and "train.sample_every: 0 -> 1" in said.err
    assert "settings changed" not in said.out + said.err and "run complete" not in said.out
    assert _snapshot(out) == before  # no config.json rewrite, no config_changes.jsonl, no metrics


def test_a_finished_run_continues_when_steps_are_raised_and_stops_at_stop_after_step(finished, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"
    shutil.copytree(finished[0], out)
    assert _main(out, "--train.steps=4", "--train.stop_after_step=3") == 0
    said = capsys.readouterr().out
    assert f"run {out}: resuming at step 2, training to step 3 of 4 (train.stop_after_step)" in said
    assert "stopped at step 3/4 (train.stop_after_step); re-run without it" in said
    assert _main(out, "--train.steps=4", "--train.stop_after_step=3") == 0
    assert "already stopped at step 3 of 4 (train.stop_after_step=3)" in capsys.readouterr().out


def test_config_error_under_torchrun_is_printed_once_and_names_the_root_cause(tmp_path):
    proc = run_train(f"--train.out_dir={tmp_path}", "--train.stepz=3", nproc=2, check=False, timeout=240)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("config error:")]
    assert len(lines) == 1 and "train.stepz" in lines[0]  # rank 0 only
    assert "traceback : config error: unknown config key 'train.stepz'" in proc.stderr  # torchrun's root cause
