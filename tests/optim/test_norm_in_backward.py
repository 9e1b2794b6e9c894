"""optim.norm_in_backward in one process: the global gradient norm summed by post-accumulate-grad hooks during the
last micro-batch's backward equals the one step() reads, for every optimizer that uses it; step() then never calls
the kernels' global_norm; non-finite gradients still skip; the config refuses what would make the norm stale."""
from __future__ import annotations

import pytest
import torch

import optim
from configs.base import ConfigError
from configs.schema import load_config
from model import GPT, ModelConfig
from optim.kernel_api import kernels
from trainer.passes import make_backward

CLIPPED = {  # optimizer -> settings: every optimizer whose step uses the global norm beyond its stats, clipping on
    "gclip": dict(gamma=0.5, momentum=0.9), "dgclip": dict(gamma=0.5, delta=0.2),
    "normalized_sgd": dict(beta=0.1), "clipped_scion": dict(rho=1500.0),
    "unconstrained_clipped_scion": dict(rho=1500.0), "adamw": dict(max_grad_norm=0.5),
    "muon": dict(max_grad_norm=0.5),
}  # (sgd and Scion use it for grad_norm and the non-finite skip only: the same code path, optim/base.py _grad_norm)
LR = {"adamw": 1e-3, "muon": 0.01, "sgd": 0.05}
ACCUM = 2


def tiny_gpt():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=64, block_size=8))


def batches(step: int):
    idx = torch.randint(0, 64, (ACCUM, 2, 9), generator=torch.Generator().manual_seed(step))
    return [(x[:, :-1], x[:, 1:]) for x in idx]


def build(name: str, model):
    ns = {"ns_dtype": "float32"} if "scion" in name or name == "muon" else {}
    cfg = optim.OptimConfig(name=name, lr=LR.get(name, 0.1), **ns, **CLIPPED[name])
    return optim.build(model, cfg)


def run(name: str, in_backward: bool, steps: int = 20):
    """Losses and per-step stats of ``steps`` steps with ACCUM micro-batches (the trainer's backward closure)."""
    model = tiny_gpt()
    opt = build(name, model)
    params = [p for p in model.parameters() if p.requires_grad]
    norm = optim.BackwardNorm.attach(model, params) if in_backward else None
    if norm is not None:
        opt.take_norm_from(norm)
    losses, stats = [], []
    for step in range(steps):
        backward = make_backward(model, batches(step), torch.device("cpu"), "float32", params,
                                 before_last_micro_batch=norm.arm if norm is not None else None)
        losses.append(backward().item())
        opt.step()
        stats.append({k: v.item() for k, v in opt.stats().items()})
    return losses, stats


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CLIPPED))
def test_norm_in_backward_equals_the_plain_step(name):
    """20 steps, 2 micro-batches each: clip factors and norms equal up to fp32 summation order (relative <= 1e-6),
    losses within 1e-4 (the hooks of the first micro-batch do not count: with them the norm would differ)."""
    plain_losses, plain = run(name, False)
    losses, stats = run(name, True)
    assert max(abs(a - b) for a, b in zip(losses, plain_losses)) <= 1e-4
    for key in ("grad_norm", "clip_factor"):
        if key not in plain[0]:
            continue
        for a, b in zip(stats, plain):
            assert abs(a[key] - b[key]) <= 1e-6 * max(abs(b[key]), 1e-12), (key, a[key], b[key])
    if "clip_factor" in plain[0]:
        assert min(s["clip_factor"] for s in plain) < 1.0  # the clipping is active, not a factor of 1 compared
    else:  # adamw, muon: max_grad_norm clips (grad_norm > 0.5) on some steps
        assert max(s["grad_norm"] for s in plain) > CLIPPED[name]["max_grad_norm"]


@pytest.mark.parametrize("name", ["dgclip", "unconstrained_clipped_scion", "adamw"])
def test_step_never_calls_global_norm(monkeypatch, name):
    """One gradient read per step: with the norm taken during backward step() calls kernels.global_norm 0 times
    (the plain step calls it once)."""
    calls = []
    real = kernels.global_norm
    monkeypatch.setattr(kernels, "global_norm", lambda *a, **k: calls.append(1) or real(*a, **k))
    for in_backward, expected in ((False, 1), (True, 0)):
        model = tiny_gpt()
        opt = build(name, model)
        params = list(model.parameters())
        norm = optim.BackwardNorm.attach(model, params) if in_backward else None
        if norm is not None:
            opt.take_norm_from(norm)
        for step in range(2):
            make_backward(model, batches(step), torch.device("cpu"), "float32", params,
                          before_last_micro_batch=norm.arm if norm is not None else None)()
            calls.clear()
            opt.step()
            assert len(calls) == expected, (in_backward, len(calls))


def test_nonfinite_gradient_skips_and_an_unarmed_step_is_refused():
    model = tiny_gpt()
    opt = build("dgclip", model)
    params = list(model.parameters())
    norm = optim.BackwardNorm.attach(model, params)
    opt.take_norm_from(norm)
    before = [p.detach().clone() for p in params]
    x, y = batches(0)[0]
    norm.arm()
    (model(x, y)[1] * float("nan")).backward()
    opt.step()
    assert opt.stats()["skipped_steps"].item() == 1
    assert all(torch.equal(a, p) for a, p in zip(before, params))
    model.zero_grad(set_to_none=False)
    model(x, y)[1].backward()  # not armed: the norm would miss the gradient
    with pytest.raises(RuntimeError, match="optim.norm_in_backward.*arm"):
        opt.step()


def test_config_refuses_what_makes_the_norm_stale():
    with pytest.raises(ConfigError, match="optim.norm_in_backward.*optim.gr"):
        load_config(["--config", "configs/tiny.toml", "--optim.norm_in_backward=true", "--optim.gr.enabled=true",
                     "--optim.gr.r=0.01", "--optim.gr.alpha=0.5"])
    with pytest.raises(ConfigError, match="optim.norm_scope='group'"):
        load_config(["--config", "configs/tiny.toml", "--optim.name=dgclip", "--optim.norm_in_backward=true",
                     "--optim.norm_scope=group"])
    model = tiny_gpt()
    opt = optim.DeltaGClip(model.parameters(), lr=0.1, gamma=1.0, delta=0.1, norm_scope="tensor")
    with pytest.raises(ValueError, match="optim.norm_scope='tensor'"):
        opt.take_norm_from(optim.BackwardNorm.attach(model, list(model.parameters())))
