"""Contract tests over the whole registry: no host sync in step(), non-finite skip on device, name-keyed state dict
with bitwise resume, build on the model's parameter names."""
from __future__ import annotations

import copy

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import optim
from model import GPT, ModelConfig

NAMES = list(optim.OPTIMIZER_NAMES)


def tiny_model(tie=True, seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(n_layer=1, n_head=2, n_embd=32, vocab_size=64, block_size=16, norm="rmsnorm", mlp="relu2",
                      qk_norm=True, tie_embeddings=tie)
    return GPT(cfg)


def config(name, **kw):
    if "scion" in name or name == "muon":
        kw.setdefault("ns_dtype", "float32")
    if name in ("gclip", "dgclip"):
        kw.setdefault("gamma", 0.5)
    if name == "dgclip":
        kw.setdefault("delta", 0.1)
    if name in ("sgd", "gclip", "dgclip", "normalized_sgd", "muon"):
        kw.setdefault("momentum", 0.9)
    return optim.OptimConfig(name=name, lr=kw.pop("lr", 1e-2), **kw)


def backward(model, seed):
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, 64, (2, 16), generator=g)
    model.zero_grad(set_to_none=True)
    _, loss = model(idx, idx)
    loss.backward()
    return loss


class NoHostSync(TorchDispatchMode):
    """Raises on aten._local_scalar_dense, the op behind every .item()/bool(tensor)/float(tensor), and on
    aten.lift_fresh, behind torch.tensor(python_data), which on CUDA is a blocking host-to-device copy."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            raise AssertionError("host sync inside optimizer.step()")
        if func is torch.ops.aten.lift_fresh.default:
            raise AssertionError("torch.tensor(python data) inside optimizer.step(): a host-to-device copy on CUDA")
        return func(*args, **(kwargs or {}))


def test_no_host_sync_guard_catches_item_and_host_data():
    with pytest.raises(AssertionError, match="host sync"), NoHostSync():
        torch.ones(()).item()
    with pytest.raises(AssertionError, match="host-to-device"), NoHostSync():
        torch.tensor(0.95)


@pytest.mark.parametrize("name", NAMES)
def test_step_never_syncs_with_the_host(name):
    model = tiny_model(tie=False)
    opt = optim.build(model, config(name))
    for step in range(2):
        backward(model, step)
        with NoHostSync():
            opt.step()
            optim.step_stats(opt)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_gradient_skips_the_step_on_device(name, bad):
    model = tiny_model()
    opt = optim.build(model, config(name))
    backward(model, 0)
    opt.step()  # state exists
    backward(model, 1)
    next(model.parameters()).grad.view(-1)[3] = bad
    params = [p.detach().clone() for p in model.parameters()]
    state = copy.deepcopy(opt.state_dict()["state"])
    with NoHostSync():
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(params, model.parameters()))
    for key, entry in opt.state_dict()["state"].items():
        for field, value in entry.items():
            assert torch.equal(value, state[key][field]), (key, field)
    assert opt.stats()["skipped_steps"].item() == 1
    backward(model, 2)
    opt.step()
    assert opt.stats()["skipped_steps"].item() == 1
    assert any(not torch.equal(a, b) for a, b in zip(params, model.parameters()))


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_continues_bitwise(name):
    model = tiny_model()
    opt = optim.build(model, config(name))
    for step in range(3):
        backward(model, step)
        opt.step()
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert all("param_names" in g for g in saved_opt["param_groups"])
    for step in range(3, 6):
        backward(model, step)
        opt.step()

    resumed = tiny_model(seed=123)
    resumed.load_state_dict(saved_model)
    opt2 = optim.build(resumed, config(name))
    opt2.load_state_dict(saved_opt)
    for step in range(3, 6):
        backward(resumed, step)
        opt2.step()
    for (n, a), b in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
    assert opt2.stats()["skipped_steps"].item() == 0


def test_state_is_matched_by_parameter_name_not_position():
    model = tiny_model()
    named = list(model.named_parameters())
    opt = optim.SGD([{"params": [p for _, p in named], "param_names": [n for n, _ in named]}], lr=0.1, momentum=0.9)
    backward(model, 0)
    opt.step()
    saved = opt.state_dict()
    reordered = optim.SGD([{"params": [p for _, p in named[::-1]], "param_names": [n for n, _ in named[::-1]]}],
                          lr=0.1, momentum=0.9)
    reordered.load_state_dict(saved)
    for _, p in named:
        assert torch.equal(reordered.state[p]["momentum_buffer"], opt.state[p]["momentum_buffer"])
    missing = optim.SGD([{"params": [p for _, p in named[1:]], "param_names": [n for n, _ in named[1:]]}],
                        lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match=named[0][0].replace(".", r"\.")):
        missing.load_state_dict(saved)


@pytest.mark.parametrize("name", NAMES)
def test_group_lrs_follow_the_scheduler(name):
    """Optimizers read group['lr'] every step: LambdaLR at factor 0 freezes the weights (up to constrained decay)."""
    model = tiny_model()
    opt = optim.build(model, config(name))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.0)
    backward(model, 0)
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    sched.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
