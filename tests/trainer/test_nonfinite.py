"""The non-finite policy: skip and count the step; stop after too many in a row, keeping the last checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

import train_gpt
from model import GPT
from tests.helpers import FAST, TINY, metrics
from trainer import checkpoint


@pytest.fixture
def poisoned_forward(monkeypatch):
    """Make the training forward pass return a NaN loss on chosen calls (1-based)."""
    original = GPT.forward
    state = {"calls": 0, "bad": set()}

    def forward(self, idx, targets=None, **kwargs):
        logits, loss = original(self, idx, targets, **kwargs)
        if targets is not None and self.training:
            state["calls"] += 1
            if state["calls"] in state["bad"]:
                loss = loss * float("nan")
        return logits, loss

    monkeypatch.setattr(GPT, "forward", forward)
    torch.set_num_threads(1)
    return state


def test_nonfinite_steps_are_skipped_and_counted(tmp_path, poisoned_forward):
    poisoned_forward["bad"] = {3, 4}
    assert train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.steps=6"]) == 0
    records = metrics(tmp_path)
    assert [bool(r.get("skipped")) for r in records] == [False, False, True, True, False, False]
    assert records[-1]["skipped_steps"] == 2
    assert all(math.isfinite(r["train_loss"]) for r in records if not r.get("skipped"))


def test_too_many_nonfinite_steps_stop_the_run(tmp_path, poisoned_forward, capsys):
    poisoned_forward["bad"] = set(range(5, 100))
    code = train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.steps=20",
                           "--train.checkpoint_every=2", "--train.max_nonfinite_steps=3"])
    assert code == 1
    err = capsys.readouterr().err
    assert "3 consecutive steps had a non-finite" in err and "step_0000004.pt (step 4) is kept" in err
    state, path = checkpoint.latest(tmp_path)
    assert state["step"] == 4 and path.name == "step_0000004.pt"


def test_skipped_rows_carry_their_own_clip_factor(tmp_path, poisoned_forward):
    """A skipped step logs what it computed (nothing finite), never the previous step's clip factor."""
    poisoned_forward["bad"] = {3}
    assert train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.steps=4",
                           "--optim.name=gclip", "--optim.lr=0.1", "--optim.gamma=0.5"]) == 0
    records = metrics(tmp_path)
    assert records[2].get("skipped") and records[2].get("clip_factor") is None
    assert all(0 < r["clip_factor"] <= 1 for i, r in enumerate(records) if i != 2)


def test_a_run_ending_inside_a_streak_writes_its_final_checkpoint_and_says_so(tmp_path, poisoned_forward, capsys):
    """Issue 20: NaN at the last steps must not leave an older newest checkpoint without a word. The skipped steps
    changed nothing, so the final checkpoint holds the weights of the last good step, and a line says so."""
    poisoned_forward["bad"] = {5, 6}
    assert train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.steps=6",
                           "--train.checkpoint_every=4"]) == 0
    err = capsys.readouterr().err
    final = checkpoint.checkpoint_file(tmp_path, 6)
    assert f"the last 2 steps (5-6) were skipped for a non-finite loss or gradient; the final checkpoint {final} " \
           f"holds the weights of step 4" in err
    state, path = checkpoint.latest(tmp_path)
    assert path == final and state["step"] == 6 and state["skipped_steps"] == 2
    good = checkpoint.load(checkpoint.checkpoint_file(tmp_path, 4), 4)
    assert all(torch.equal(good["model"][k], v) for k, v in state["model"].items())


def test_a_stop_before_any_checkpoint_does_not_claim_one_is_kept(tmp_path, poisoned_forward, capsys):
    poisoned_forward["bad"] = set(range(1, 100))
    code = train_gpt.main(["--config", TINY, *FAST, f"--train.out_dir={tmp_path}", "--train.steps=20",
                           "--train.max_nonfinite_steps=3"])
    err = capsys.readouterr().err
    assert code == 1 and "no checkpoint was written yet, so there is nothing to resume from" in err
    assert "is kept" not in err and checkpoint.list_checkpoints(tmp_path) == []
