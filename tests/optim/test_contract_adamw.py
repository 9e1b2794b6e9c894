"""torch.optim contract, composition: GradScaler.step, torch.compile(opt.step), step hooks fire once, for all ten
(torch's SGD and AdamW as controls). Our AdamW's paths in float64: test_contract_adamw_paths.py."""
from __future__ import annotations

import pytest
import torch

from tests.optim.optim_cases import CONTROLS, DEVICES, NAMES, Tiny, backward, loss_of, make


def close(a: Tiny, b: Tiny, **tol) -> bool:
    return all(torch.allclose(x, y, **tol) for x, y in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", NAMES + CONTROLS)
def test_grad_scaler_step_equals_the_unscaled_step_and_skips_inf(name, device):
    scale = 2.0 ** 10
    model, scaled_model = Tiny().to(device), Tiny().to(device)
    opt, scaled_opt = make(name, model), make(name, scaled_model)
    scaler = torch.amp.GradScaler(device, init_scale=scale, growth_interval=1000)
    for step in range(3):
        backward(model, step)
        opt.step()
        scaler.scale(loss_of(scaled_model, step)).backward()
        scaler.step(scaled_opt)
        scaler.update()
        assert not hasattr(scaled_opt, "found_inf") and not hasattr(scaled_opt, "grad_scale")
    assert close(model, scaled_model, rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in scaled_model.parameters()]
    scaler.scale(loss_of(scaled_model, 9)).backward()
    scaled_model.weight.grad[0, 0] = float("inf")
    scaler.step(scaled_opt)
    scaler.update()
    assert all(torch.equal(a, b) for a, b in zip(before, scaled_model.parameters()))
    assert scaler.get_scale() == scale / 2


@pytest.mark.parametrize("name, backend", [(name, "eager") for name in NAMES + CONTROLS]
                         + [pytest.param("adamw", "inductor", marks=pytest.mark.slow)])
def test_compiled_step_equals_the_eager_step(name, backend):
    """backend "eager" traces step() with dynamo (what breaks on attributes and hooks); inductor also compiles it."""
    torch._dynamo.reset()
    model, compiled_model = Tiny(), Tiny()
    opt, compiled_opt = make(name, model), make(name, compiled_model)
    step = torch.compile(compiled_opt.step, backend=backend)
    for i in range(2):
        backward(model, i)
        opt.step()
        backward(compiled_model, i)
        step()
    assert close(model, compiled_model, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES + CONTROLS)
def test_step_hooks_fire_once_each_after_torch_adam_was_built(name):
    w = torch.nn.Parameter(torch.zeros(2))
    torch.optim.Adam([w]), torch.optim.AdamW([w])  # patches torch's Adam.step with its hook wrapper
    model = Tiny()
    opt = make(name, model)
    calls = []
    opt.register_step_pre_hook(lambda *_: calls.append("pre"))
    opt.register_step_post_hook(lambda *_: calls.append("post"))
    backward(model, 0)
    opt.step()
    assert calls == ["pre", "post"]
