"""Clipped Scion (rank-split Newton-Schulz) with gradient regularization: 1 process with gradient accumulation 2
equals torchrun 2 processes at the same global batch (gloo), through the trainer."""
from __future__ import annotations

import pytest

from tests.helpers import losses, metrics, run_train

pytestmark = pytest.mark.slow

ARGS = ("--train.steps=3", "--train.batch_size=8", "--train.micro_batch_size=4", "--train.eval_tokens=1024",
        "--model.block_size=32", "--optim.name=unconstrained_clipped_scion", "--optim.lr=3.6e-4", "--optim.rho=50",
        "--optim.ns_dtype=float32", "--optim.gr.enabled=true", "--optim.gr.r=0.05", "--optim.gr.alpha=0.5",
        "--optim.gr.warmup=r", "--optim.gr.warmup_steps=2", "--train.checkpoint_every=0")


def test_clipped_scion_with_gr_two_ranks_match_one(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_train(f"--train.out_dir={one}", *ARGS)             # 1 rank x accumulation 2
    run_train(f"--train.out_dir={two}", *ARGS, nproc=2)    # 2 ranks x accumulation 1
    assert losses(two) == pytest.approx(losses(one), rel=1e-5, abs=1e-5)
    for key in ("grad_norm", "dual_norm", "clip_factor"):
        assert [m[key] for m in metrics(two)] == pytest.approx([m[key] for m in metrics(one)], rel=1e-4), key
