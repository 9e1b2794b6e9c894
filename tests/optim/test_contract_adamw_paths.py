"""Our AdamW on every path (fused, foreach, per tensor, non-contiguous) against torch.optim.AdamW in float64, foreign
torch AdamW state dicts, and `max_grad_norm` (AdamW, Muon) against torch's clip_grad_norm_."""
from __future__ import annotations

import copy

import pytest
import torch

import optim
from tests.optim.optim_cases import Tiny, backward, make, train


def close(a: Tiny, b: Tiny, **tol) -> bool:
    return all(torch.allclose(x, y, **tol) for x, y in zip(a.parameters(), b.parameters()))


def reference_run(kw, steps, make_params, clip=None):
    params = make_params()
    ref = torch.optim.AdamW(params, foreach=False, **kw)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        ref.step()
    return params


def our_run(kw, steps, make_params, **ours):
    params = make_params()
    opt = optim.AdamW(params, **kw, **ours)
    for step in range(steps):
        g = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g, dtype=p.dtype)
        opt.step()
    return params, opt


def contiguous_params():
    g = torch.Generator().manual_seed(7)
    return [torch.nn.Parameter(torch.randn(4, 3, generator=g, dtype=torch.float64)),
            torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))]


def strided_params():
    """A view into every other element of a buffer (torch 2.13's fused CPU AdamW writes into the neighbours)."""
    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 3, 2, generator=g, dtype=torch.float64)
    return [torch.nn.Parameter(base[..., 0]), torch.nn.Parameter(torch.randn(5, generator=g, dtype=torch.float64))]


PATHS = {"fused": dict(fused=True), "auto": dict(), "foreach": dict(fused=False),
         "per_tensor": dict(fused=False, foreach=False)}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kw", [dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1),
                                dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.0, maximize=True)],
                         ids=["wd", "maximize"])
def test_adamw_paths_match_torch_adamw_float64(path, kw):
    ref = reference_run(kw, 4, contiguous_params)
    ours, _ = our_run(kw, 4, contiguous_params, backend="torch", **PATHS[path])
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_non_contiguous_parameters_take_the_foreach_path_and_match_torch():
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref = reference_run(kw, 3, strided_params)
    ours, _ = our_run(kw, 3, strided_params, backend="torch")
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    base = ours[0]._base if ours[0]._base is not None else None
    if base is not None:  # the neighbouring slice is untouched
        untouched = strided_params()[0]._base[..., 1]
        torch.testing.assert_close(base[..., 1], untouched, rtol=0, atol=0)
    with pytest.raises(ValueError, match="fused=True needs contiguous"):
        optim.AdamW(strided_params(), lr=1e-2, fused=True)


def test_a_tensor_lr_is_used_on_the_device():
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref = reference_run(kw, 3, contiguous_params)
    for path in PATHS.values():
        ours, _ = our_run(dict(kw, lr=torch.tensor(1e-2, dtype=torch.float64)), 3, contiguous_params,
                          backend="torch", **path)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("path", list(PATHS) + ["strided"])
def test_every_path_skips_a_non_finite_step_on_the_device(path):
    params_fn = strided_params if path == "strided" else contiguous_params
    params, opt = our_run(dict(lr=1e-2, weight_decay=0.1), 2, params_fn, backend="torch",
                          **PATHS.get(path, {}))
    before = [p.detach().clone() for p in params]
    state = copy.deepcopy(opt.state_dict()["state"])
    for p in params:
        p.grad = torch.ones_like(p)
    params[1].grad[0] = float("nan")
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params))
    for key, entry in opt.state_dict()["state"].items():
        for field, value in entry.items():
            assert torch.equal(value.cpu(), state[key][field].cpu()), (key, field)
    assert opt.stats()["skipped_steps"].item() == 1


def test_a_torch_adamw_state_dict_loads_and_continues_like_torch():
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    model, twin = Tiny(dtype=torch.float64), Tiny(dtype=torch.float64)
    theirs = torch.optim.AdamW(model.parameters(), **kw)
    train(model, theirs, range(2))
    twin.load_state_dict(model.state_dict())
    ours = optim.AdamW(twin.parameters(), **kw)
    saved = copy.deepcopy(theirs.state_dict())  # a live state_dict shares its tensors with `theirs`
    assert "fused" in saved["param_groups"][0]
    del saved["param_groups"][0]["fused"]  # as written by torch versions before the flag
    ours.load_state_dict(saved)
    assert ours.max_grad_norm is None and ours.backend == "auto"
    train(model, theirs, range(2, 4))
    train(twin, ours, range(2, 4))
    assert close(model, twin, rtol=1e-12, atol=1e-14)


# --- max_grad_norm: torch's clip_grad_norm_ with the step's own norm ---------------------------------------------

def test_adamw_max_grad_norm_is_clip_grad_norm_then_adamw_float64():
    kw = dict(lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    ref = reference_run(kw, 4, contiguous_params, clip=0.5)
    for path in PATHS.values():
        ours, opt = our_run(kw, 4, contiguous_params, backend="torch", max_grad_norm=0.5, **path)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    g = torch.Generator().manual_seed(3)
    pre_clip = torch.cat([torch.randn(p.shape, generator=g, dtype=p.dtype).flatten() for p in ours]).norm()
    torch.testing.assert_close(opt.stats()["grad_norm"].double(), pre_clip)


def test_muon_max_grad_norm_is_clip_grad_norm_then_muon():
    def run(max_grad_norm):
        model = Tiny(dtype=torch.float64)
        opt = make("muon", model, max_grad_norm=max_grad_norm, ns_dtype="float64")
        norms = []
        for step in range(3):
            backward(model, step, scale=50.0)
            if max_grad_norm is None:
                norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5))
            opt.step()
        return model, opt, norms

    clipped, opt, _ = run(0.5)
    reference, _, norms = run(None)
    assert close(clipped, reference, rtol=1e-12, atol=1e-14)
    assert norms[-1] > 0.5
    torch.testing.assert_close(opt.stats()["grad_norm"].double(), norms[-1].double())


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_max_grad_norm_is_off_by_default_and_reaches_the_optimizer_from_the_config(name):
    from model import GPT, ModelConfig

    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=32, block_size=8))
    assert optim.build(model, optim.OptimConfig(name=name)).max_grad_norm is None
    assert optim.build(model, optim.OptimConfig(name=name, max_grad_norm=1.0)).max_grad_norm == 1.0


@pytest.mark.parametrize("fused, expected", [("auto", None), (True, True), (False, False)])
def test_the_fused_config_key_reaches_adamw(fused, expected):
    from model import GPT, ModelConfig

    model = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=32, block_size=8))
    opt = optim.build(model, optim.OptimConfig(name="adamw", fused=fused))
    assert all(g["fused"] is expected for g in opt.param_groups)
