"""DDP on CPU (gloo): 1 process == torchrun 2 processes at the same global batch; multi-node stand-in."""

from __future__ import annotations


import pytest

from tests.helpers import losses, metrics, run_train, run_two_nodes

pytestmark = pytest.mark.slow

COMMON = ("--train.steps=4", "--train.batch_size=16", "--train.micro_batch_size=8", "--train.eval_tokens=4096")


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    run_train(f"--train.out_dir={out}", *COMMON)  # gradient accumulation 2
    return out


def test_two_processes_match_one(single_process, tmp_path):
    run_train(f"--train.out_dir={tmp_path}", *COMMON, nproc=2)  # 2 ranks x accumulation 1
    assert losses(tmp_path) == pytest.approx(losses(single_process), rel=1e-5, abs=1e-5)
    one, two = metrics(single_process), metrics(tmp_path)
    assert [m["grad_norm"] for m in two] == pytest.approx([m["grad_norm"] for m in one], rel=1e-4)
    assert two[-1]["val_loss"] == pytest.approx(one[-1]["val_loss"], rel=1e-5)


def test_two_nodes_on_localhost(single_process, tmp_path):
    """Two `torchrun --nnodes=2` launches rendezvous on 127.0.0.1, as on two machines."""
    out = tmp_path / "run"
    outputs = run_two_nodes(out, *COMMON)
    assert any("world size 2" in o for o in outputs)
    assert losses(out) == pytest.approx(losses(single_process), rel=1e-5, abs=1e-5)


def test_resume_at_a_different_world_size(single_process, tmp_path):
    run_train(f"--train.out_dir={tmp_path}", *COMMON[1:], "--train.steps=4", "--train.stop_after_step=2", nproc=2)
    proc = run_train(f"--train.out_dir={tmp_path}", *COMMON)
    assert "saved with world size 2, now 1" in proc.stdout
    assert losses(tmp_path) == pytest.approx(losses(single_process), rel=1e-5, abs=1e-5)
