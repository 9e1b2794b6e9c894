"""GR with per-rank perturbations (gnp's sync_perturbations=False) at 2 gloo ranks against a reference that
perturbs each rank's half batch with its own g1 and averages the mixed gradients; the default (one global
perturbation) against the full-batch reference."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.distributed.gr_per_rank_worker import Regression, data
from tests.helpers import REPO_ROOT, env

pytestmark = pytest.mark.slow


def mixed_gradient(rows, r, alpha):
    """(1 - alpha) g1 + alpha grad L(theta + r g1/||g1||) on `rows` of the data (eq. 4), plain autograd."""
    x, y = data()
    torch.manual_seed(0)
    model = Regression()
    params = list(model.parameters())
    g1 = torch.autograd.grad(model(x[rows], y[rows])[1], params)
    norm = torch.sqrt(sum((g ** 2).sum() for g in g1))
    with torch.no_grad():
        for p, g in zip(params, g1):
            p.add_(r * g / norm)
    g2 = torch.autograd.grad(model(x[rows], y[rows])[1], params)
    return [(1 - alpha) * a + alpha * b for a, b in zip(g1, g2)]


def test_per_rank_and_global_perturbations_at_two_ranks(tmp_path):
    out = tmp_path / "grads.pt"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO_ROOT / "tests" / "distributed" / "gr_per_rank_worker.py"), str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    got = torch.load(out)
    halves = [mixed_gradient(rows, 0.5, 0.7) for rows in (slice(0, 4), slice(4, 8))]
    per_rank = [(a + b) / 2 for a, b in zip(*halves)]
    for g, e in zip(got[False], per_rank):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    for g, e in zip(got[True], mixed_gradient(slice(0, 8), 0.5, 0.7)):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(got[False], got[True])) > 1e-3  # they differ
