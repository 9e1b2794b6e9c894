"""A step a CUDA graph can replay (optim/capture.py, `optim.cuda_graph`): the lr reaches the step through device
memory. On CPU everything but the capture itself: the device lr steps like the float lr under a changing schedule,
its tensors stay the same objects, loading it never syncs the host; the capture and replay run on CUDA only."""
from __future__ import annotations

import pytest
import torch

import optim
from configs.base import ConfigError
from configs.schema import load_config
from tests.optim.test_every_optimizer import NAMES, NoHostSync, backward, config, tiny_model

CAPTURED = ["dgclip", "unconstrained_clipped_scion", "clipped_scion", "muon", "adamw"]


def pair(name, device="cpu"):
    models = [tiny_model(tie=False).to(device) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.build(m, config(name)) for m in models]
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (1 + s)) for o in opts]
    return models, opts, scheds


@pytest.mark.parametrize("name", NAMES)
def test_device_lr_steps_like_the_float_lr_under_a_schedule(name):
    models, (on_device, plain), scheds = pair(name)
    on_device.keep_lr_on_device()
    tensors = None
    for seed in range(3):
        for model, opt in zip(models, (on_device, plain)):
            backward(model, seed)
            opt.step()
        for s in scheds:
            s.step()
        current = [id(t) for t in on_device.__dict__["_lr_tensors"]]
        assert tensors in (None, current)  # made once, then refilled
        tensors = current
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)  # lr rounded to fp32
    assert isinstance(on_device.param_groups[0]["lr"], float)  # torch's schedulers still see a float
    on_device.load_lrs()  # the scheduler has moved on since the last step
    values = [float(t) for t in on_device.__dict__["_lr_tensors"]]
    assert values == pytest.approx([g["lr"] for g in on_device.param_groups], rel=1e-6)


def test_loading_the_lrs_never_syncs_the_host():
    model = tiny_model(tie=False)
    opt = optim.build(model, config("dgclip"))
    opt.keep_lr_on_device()
    backward(model, 0)
    opt.step()
    opt.param_groups[0]["lr"] = 0.5
    with NoHostSync():
        opt.load_lrs()
        backward(model, 1)
        opt.step()
    assert float(opt.lr_of(opt.param_groups[0])) == 0.5


def test_the_counters_count_in_place():
    """A captured step replays writes into the counters it saw at capture: they must be updated in place."""
    model = tiny_model(tie=False)
    opt = optim.build(model, config("dgclip"))
    backward(model, 0)
    opt.step()
    counters = dict(opt.stats())
    for p in model.parameters():
        p.grad.fill_(float("nan"))
    opt.step()
    assert counters["skipped_steps"] is opt.stats()["skipped_steps"] and int(counters["skipped_steps"]) == 1
    assert int(counters["consecutive_skips"]) == 1


def test_capture_needs_cuda_parameters():
    model = tiny_model(tie=False)
    with pytest.raises(ValueError, match="optim.cuda_graph: needs every parameter on one CUDA device"):
        optim.CapturedStep(optim.build(model, config("dgclip")))
    with pytest.raises(TypeError, match="cannot be captured"):
        optim.CapturedStep(torch.optim.SGD(model.parameters(), lr=0.1))


def test_cuda_graph_on_a_cpu_run_is_a_config_error():
    with pytest.raises(ConfigError, match="optim.cuda_graph=true.*train.device='cpu'"):
        load_config(["--config", "configs/tiny.toml", "--optim.cuda_graph=true", "--train.device=cpu"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", CAPTURED)
def test_captured_step_replays_with_the_current_lr(name):
    models, (captured_opt, plain), scheds = pair(name, "cuda")
    plain.keep_lr_on_device()  # the same arithmetic, eager
    step = optim.CapturedStep(captured_opt, warmup=2)
    for seed in range(6):
        for model in models:
            model.zero_grad(set_to_none=False)  # storage stays put
        for model, run in zip(models, (step, plain.step)):
            g = torch.Generator().manual_seed(seed)
            idx = torch.randint(0, 64, (2, 16), generator=g).cuda()
            _, loss = model(idx, idx)
            loss.backward()
            run()
        for s in scheds:
            s.step()
    assert step.captured
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    for key in ("grad_norm", "skipped_steps"):
        torch.testing.assert_close(captured_opt.stats()[key], plain.stats()[key])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_captured_step_skips_a_non_finite_step_on_the_device():
    model = tiny_model(tie=False).cuda()
    opt = optim.build(model, config("dgclip"))
    step = optim.CapturedStep(opt, warmup=1)
    for seed in range(3):
        model.zero_grad(set_to_none=False)
        idx = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(seed)).cuda()
        model(idx, idx)[1].backward()
        if seed == 2:
            before = [p.detach().clone() for p in model.parameters()]
            next(model.parameters()).grad.view(-1)[0] = float("nan")
        step()
    assert step.captured and int(opt.stats()["skipped_steps"]) == 1
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with pytest.raises(RuntimeError, match="gradients moved"):
        model.zero_grad(set_to_none=True)
        model(idx, idx)[1].backward()
        step()


@pytest.mark.parametrize("name", ["dgclip", "unconstrained_clipped_scion", "muon", "adamw"])
def test_a_precomputed_sum_of_squares_replaces_the_norm_pass(name, monkeypatch):
    """The plug for the norm taken during backward: given the sum of squares, step() takes its square root and
    never calls the norm pass; the step equals the plain one up to fp32 summation order."""
    import optim.base
    models, (given, plain), _ = pair(name)
    for model in models:
        backward(model, 0)
    plain.step()
    grads = [p.grad for p in models[0].parameters()]
    acc = torch.stack([g.double().square().sum() for g in grads]).sum().float()
    given.take_grad_sq_sum_from(acc)
    monkeypatch.setattr(optim.base, "global_norms", lambda *a, **k: pytest.fail("norm pass called"))
    given.step()
    torch.testing.assert_close(given.stats()["grad_norm"], plain.stats()["grad_norm"], rtol=1e-6, atol=0)
    for a, b in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="1-element tensor"):
        given.take_grad_sq_sum_from(torch.ones(2))
