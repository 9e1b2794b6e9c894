"""Gradient regularization (Zhao et al., ICML 2024) against autograd of L + lambda ||grad L||, and its warmups."""
from __future__ import annotations

import pytest
import torch

from optim import GradientRegularization, GRConfig

N = 6


def quadratic(seed=0):
    g = torch.Generator().manual_seed(seed)
    M = torch.randn(N, N, generator=g, dtype=torch.float64)
    A = M @ M.T / N + torch.eye(N, dtype=torch.float64)
    b = torch.randn(N, generator=g, dtype=torch.float64)
    return A, b


def loss_fn(theta, A, b):
    return 0.5 * theta @ A @ theta + b @ theta


class Recorder:
    """The trainer's backward() closure on a float32 parameter; records the parameters seen by each pass."""

    def __init__(self, param, A, b):
        self.param, self.A, self.b, self.seen = param, A.float(), b.float(), []

    def __call__(self):
        self.param.grad = None
        self.seen.append(self.param.detach().clone())
        loss = loss_fn(self.param, self.A, self.b)
        loss.backward()
        return loss.detach()


def reference_gr_grad(theta, A, b, lam):
    """Exact grad of L + lambda ||grad L|| (eq. 1) by double backprop, float64."""
    theta = theta.double().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(loss_fn(theta, A, b), theta, create_graph=True)
    (out,) = torch.autograd.grad(loss_fn(theta, A, b) + lam * g.norm(), theta)
    return out


@pytest.mark.parametrize("r, alpha", [(0.1, 0.8), (0.5, 0.3), (2.0, 1.0)])
def test_quadratic_matches_autograd_of_the_penalized_loss(r, alpha):
    A, b = quadratic()
    p = torch.nn.Parameter(torch.randn(N))
    theta0 = p.detach().clone()
    gr = GradientRegularization(GRConfig(enabled=True, r=r, alpha=alpha), total_steps=10)
    rec = Recorder(p, A, b)
    loss = gr.compute([p], rec, step=5)
    assert len(rec.seen) == 2
    assert torch.equal(p.detach(), theta0)  # parameters restored exactly
    assert loss.item() == pytest.approx(loss_fn(theta0.double(), A, b).item(), rel=1e-5)
    expected = reference_gr_grad(theta0, A, b, lam=alpha * r)
    assert torch.allclose(p.grad.double(), expected, rtol=1e-5, atol=1e-5)
    assert (rec.seen[1] - rec.seen[0]).norm().item() == pytest.approx(r, rel=1e-5)  # ||theta' - theta|| = r


def test_alpha_one_is_the_sam_gradient_and_normalized_g1_option():
    A, b = quadratic(1)
    p = torch.nn.Parameter(torch.randn(N))
    theta = p.detach().double()
    g1 = A @ theta + b
    v = g1 / g1.norm()
    GradientRegularization(GRConfig(enabled=True, r=0.3, alpha=1.0), 10).compute([p], Recorder(p, A, b), 3)
    assert torch.allclose(p.grad.double(), A @ (theta + 0.3 * v) + b, rtol=1e-5, atol=1e-6)
    GradientRegularization(GRConfig(enabled=True, r=0.3, alpha=0.4, normalized_g1=True), 10).compute(
        [p], Recorder(p, A, b), 3)
    expected = 0.6 * v + 0.4 * (A @ (theta + 0.3 * v) + b)
    assert torch.allclose(p.grad.double(), expected, rtol=1e-5, atol=1e-6)


def test_disabled_is_one_plain_pass():
    A, b = quadratic()
    p = torch.nn.Parameter(torch.randn(N))
    rec = Recorder(p, A, b)
    gr = GradientRegularization(GRConfig(enabled=False), 10)
    assert not gr.enabled
    gr.compute([p], rec, 0)
    assert len(rec.seen) == 1
    assert torch.allclose(p.grad.double(), A @ p.detach().double() + b, rtol=1e-5)


def test_warmup_factors_and_schedules():
    r, alpha, T = 0.2, 0.5, 10
    ramps = {w: GradientRegularization(GRConfig(enabled=True, r=r, alpha=alpha, warmup=w, warmup_steps=T), 100)
             for w in ("r", "lambda", "zero")}
    assert [ramps["r"].warmup_factor(t) for t in (0, 5, 10, 50)] == [0.0, 0.5, 1.0, 1.0]
    for t in range(0, 15):
        r_r, a_r, on_r = ramps["r"].schedule(t)
        r_l, a_l, on_l = ramps["lambda"].schedule(t)
        assert on_r and on_l
        assert r_r * a_r == pytest.approx(r_l * a_l)  # the same lambda_t sequence
        assert ramps["zero"].schedule(t) == ((0.0, 0.0, False) if t < T else (r, alpha, True))


@pytest.mark.parametrize("warmup", ["r", "lambda", "zero"])
def test_every_warmup_gives_the_plain_gradient_at_step_zero(warmup):
    A, b = quadratic()
    p = torch.nn.Parameter(torch.randn(N))
    gr = GradientRegularization(GRConfig(enabled=True, r=0.3, alpha=0.7, warmup=warmup, warmup_steps=4), 10)
    rec = Recorder(p, A, b)
    gr.compute([p], rec, 0)
    assert len(rec.seen) == 1  # zero: plain; r_0 = 0 gives theta' = theta; alpha_0 = 0 ignores g2: one pass suffices
    assert torch.allclose(p.grad.double(), A @ p.detach().double() + b, rtol=1e-5, atol=1e-6)
    rec = Recorder(p, A, b)
    gr.compute([p], rec, 4)  # after the warmup: full GR
    assert len(rec.seen) == 2
    expected = reference_gr_grad(p.detach(), A, b, lam=0.7 * 0.3)
    assert torch.allclose(p.grad.double(), expected, rtol=1e-5, atol=1e-5)


def dropout_gpt():
    from model import GPT, ModelConfig

    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16, dropout=0.2))
    model.train()
    idx = torch.randint(0, 64, (2, 2, 16), generator=torch.Generator().manual_seed(1))
    return model, [(x, x) for x in idx]  # two micro-batches


def test_dropout_masks_are_replayed_for_the_perturbed_pass():
    """r = 1e-6, alpha = 1: g = g2 = grad L(theta + r v) with the same dropout masks, so ||g - g1|| / ||g1|| ~ 0
    (a new mask draw for the second pass gives about 0.5)."""
    from trainer.passes import make_backward

    model, batches = dropout_gpt()
    params = [p for p in model.parameters() if p.requires_grad]
    backward = make_backward(model, batches, torch.device("cpu"), "float32", params)
    torch.manual_seed(123)
    plain_loss = backward()
    g1 = torch.cat([p.grad.reshape(-1) for p in params])
    after_plain = torch.get_rng_state()
    torch.manual_seed(123)
    gr = GradientRegularization(GRConfig(enabled=True, r=1e-6, alpha=1.0), total_steps=10)
    loss = gr.compute(params, backward, step=5)
    g = torch.cat([p.grad.reshape(-1) for p in params])
    assert ((g - g1).norm() / g1.norm()).item() < 1e-3
    assert loss.item() == plain_loss.item()
    assert torch.equal(torch.get_rng_state(), after_plain)  # the RNG is where one plain step leaves it


def test_single_process_per_rank_perturbations_are_the_global_ones():
    """sync_perturbations=False without a process group is the same algorithm (one rank holds the whole batch)."""
    A, b = quadratic()
    grads = []
    for sync in (True, False):
        p = torch.nn.Parameter(torch.ones(N))
        GradientRegularization(GRConfig(enabled=True, r=0.3, alpha=0.5, sync_perturbations=sync),
                               total_steps=10).compute([p], Recorder(p, A, b), step=5)
        grads.append(p.grad.clone())
    assert torch.equal(*grads)
