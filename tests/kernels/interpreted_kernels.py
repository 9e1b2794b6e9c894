"""Triton kernels against their torch references. Not collected directly (the name does not start with
test_): tests/kernels/test_kernels_triton.py runs this file in a subprocess with TRITON_INTERPRET=1 (CPU
tensors, tiny chunks) and, on a CUDA machine, also without it (real kernels on the GPU)."""
from __future__ import annotations

import math
import os

import pytest
import torch

from optim.kernel_api import kernels
from clipgpt_kernels.chunk_table import override_tuning
from clipgpt_kernels.triton_common import count_launches

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cpu" if INTERPRETED else "cuda"
if not INTERPRETED and not torch.cuda.is_available():
    pytest.skip("needs TRITON_INTERPRET=1 or a CUDA device", allow_module_level=True)

# Few programs per call: the interpreter costs ~3 ms per program instance. Chunk 64 with blocks of 16
# exercises the unmasked main loop (4 iterations per full chunk), the masked tail and many chunks per tensor.
ODD_SHAPES = [(67,), (0,), (13, 5), (1,), (130,), (16,)]
TINY_MANY = [(1 + i % 5,) for i in range(24)]


@pytest.fixture(autouse=True)
def small_chunks():
    with override_tuning(chunk_size=64, max_block=16):
        yield


def make(shapes, dtype=torch.float32, seed=0, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(scale * torch.randn(s, generator=gen)).to(dtype).to(DEVICE) for s in shapes]


def clone(ts):
    return [t.clone() for t in ts]


def assert_lists_close(got, want, dtype):
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), **tol)


# ----------------------------------------------------------------------------------------- global norm
@pytest.mark.parametrize("shapes", [ODD_SHAPES, TINY_MANY], ids=["odd", "many_tiny"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_global_norm_matches_reference(shapes, dtype):
    ts = make(shapes, dtype)
    got = kernels.global_norm(ts, backend="triton")
    assert got.dtype == torch.float32 and got.dim() == 0 and got.device.type == DEVICE
    torch.testing.assert_close(got, kernels.global_norm(ts, backend="torch"), rtol=1e-6, atol=0)


def test_global_norm_mixed_dtypes():
    ts = make(ODD_SHAPES) + make(ODD_SHAPES, torch.bfloat16, seed=1)
    torch.testing.assert_close(kernels.global_norm(ts, backend="triton"), kernels.global_norm(ts, backend="torch"))


def test_global_norm_empty_and_zero_size():
    assert kernels.global_norm([], backend="triton").item() == 0.0
    zero = kernels.global_norm([torch.zeros(0, device=DEVICE)] * 3, backend="triton")
    assert zero.item() == 0.0 and zero.device.type == DEVICE


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_global_norm_non_finite(bad):
    ts = make(ODD_SHAPES)
    ts[4][129] = bad
    got = kernels.global_norm(ts, backend="triton").item()
    assert math.isnan(got) if math.isnan(bad) else got == math.inf


def test_global_norm_bitwise_deterministic():
    ts = make(ODD_SHAPES + TINY_MANY, scale=10.0)
    first = kernels.global_norm(ts, backend="triton")
    assert torch.equal(first, kernels.global_norm(ts, backend="triton"))


def test_global_norm_unaligned_views():
    """A view starting 4 bytes into its storage is contiguous but not 16-byte aligned: no vector hint."""
    base = make([(200,)])[0]
    ts = [base[1:], base[3:70]]
    torch.testing.assert_close(kernels.global_norm(ts, backend="triton"), kernels.global_norm(ts, backend="torch"))


def test_non_contiguous_falls_back_to_torch():
    t = make([(12, 10)])[0].t()
    with pytest.warns(UserWarning, match="non-contiguous"):
        got = kernels.global_norm([t], backend="triton")
    torch.testing.assert_close(got, kernels.global_norm([t], backend="torch"))


def test_float64_falls_back_to_the_float64_reference():
    t = make([(12, 10)], dtype=torch.float64)[0]
    with pytest.warns(UserWarning, match="float64"):
        got = kernels.global_norm([t], backend="triton")
    assert got.dtype == torch.float64
    assert got.item() == torch.linalg.vector_norm(t).item()


# ------------------------------------------------------------------------------------ clipped update
UPDATE_CASES = [
    dict(rule="none"),
    dict(rule="gclip", gamma=0.5, weight_decay=0.1),
    dict(rule="gclip", gamma=0.5, momentum=0.9),
    dict(rule="gclip", gamma=50.0, momentum=0.9, nesterov=True, weight_decay=0.1),
    dict(rule="dgclip", gamma=0.5, delta=0.3, momentum=0.9, weight_decay=0.1),
    dict(rule="dgclip", gamma=0.5, delta=0.3, momentum=0.9, nesterov=True, weight_decay=0.1,
         weight_decay_mode="coupled"),
    dict(rule="normalized", beta=0.2, momentum=0.5, weight_decay=0.01, weight_decay_mode="coupled"),
    dict(rule="normalized", beta=0.0, weight_decay=0.01),
]


@pytest.mark.parametrize("case", UPDATE_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_clipped_sgd_update_matches_reference(case, dtype):
    params, grads = make(ODD_SHAPES, dtype, 0), make(ODD_SHAPES, dtype, 1)
    momenta = make(ODD_SHAPES, torch.float32, 2) if case.get("momentum") else None
    norm = kernels.global_norm(grads, backend="torch")
    ref_p, ref_m = clone(params), clone(momenta) if momenta else None
    kernels.clipped_sgd_update_(ref_p, grads, ref_m, norm, lr=0.1, backend="torch", **case)
    kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, backend="triton", **case)
    assert_lists_close(params, ref_p, dtype)
    if momenta:
        assert_lists_close(momenta, ref_m, torch.float32)


def test_clipped_sgd_update_bf16_momenta_and_zero_norm():
    params, grads = make(ODD_SHAPES, torch.bfloat16), [torch.zeros_like(t) for t in make(ODD_SHAPES)]
    momenta = make(ODD_SHAPES, torch.bfloat16, 2)
    ref_p, ref_m = clone(params), clone(momenta)
    norm = kernels.global_norm(grads, backend="triton")
    for ps, ms, backend in ((ref_p, ref_m, "torch"), (params, momenta, "triton")):
        kernels.clipped_sgd_update_(ps, grads, ms, norm, lr=0.1, rule="dgclip", gamma=1.0, delta=0.1, momentum=0.9,
                                    weight_decay=0.1, backend=backend)
    assert_lists_close(params, ref_p, torch.bfloat16)
    assert_lists_close(momenta, ref_m, torch.bfloat16)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("rule", kernels.CLIP_RULES)
def test_non_finite_norm_writes_nothing(bad, rule):
    params, grads, momenta = make(ODD_SHAPES, seed=0), make(ODD_SHAPES, seed=1), make(ODD_SHAPES, seed=2)
    grads[2][3, 1] = bad
    before = clone(params + momenta)
    norm = kernels.global_norm(grads, backend="triton")
    kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, rule=rule, gamma=1.0, momentum=0.9,
                                weight_decay=0.1, backend="triton")
    assert all(torch.equal(a, b) for a, b in zip(params + momenta, before))


def test_clipped_sgd_update_bitwise_deterministic():
    runs = []
    for _ in range(2):
        params, grads, momenta = make(ODD_SHAPES, seed=0), make(ODD_SHAPES, seed=1), make(ODD_SHAPES, seed=2)
        norm = kernels.global_norm(grads, backend="triton")
        kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, rule="gclip", gamma=1.0, momentum=0.9,
                                    nesterov=True, weight_decay=0.1, backend="triton")
        runs.append(params + momenta)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("shapes", [ODD_SHAPES, TINY_MANY], ids=["few", "many"])
def test_norm_plus_update_launches_do_not_grow_with_tensor_count(shapes):
    params, grads, momenta = make(shapes, seed=0), make(shapes, seed=1), make(shapes, seed=2)
    with count_launches() as counter:
        norm = kernels.global_norm(grads, backend="triton")
        kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, rule="dgclip", gamma=1.0, delta=0.1,
                                    momentum=0.9, backend="triton")
    assert counter.count <= 3, counter.names


# ---------------------------------------------------------------------------------------------- Scion
@pytest.mark.parametrize("d_dtype, g_dtype", [(torch.float32, torch.float32), (torch.float32, torch.bfloat16),
                                              (torch.bfloat16, torch.bfloat16)])
def test_lerp_momentum_matches_reference(d_dtype, g_dtype):
    ds, grads = make(ODD_SHAPES, d_dtype, 0), make(ODD_SHAPES, g_dtype, 1)
    ref = clone(ds)
    kernels.lerp_momentum_(ref, grads, 0.1, backend="torch")
    kernels.lerp_momentum_(ds, grads, 0.1, backend="triton")
    assert_lists_close(ds, ref, d_dtype)


@pytest.mark.parametrize("guard", [0.5, float("nan"), float("inf")])
def test_lerp_momentum_guard(guard):
    ds, grads = make(ODD_SHAPES, torch.float32, 0), make(ODD_SHAPES, torch.float32, 1)
    ref = clone(ds)
    flag = torch.tensor(guard, device=DEVICE)
    kernels.lerp_momentum_(ref, grads, 0.1, backend="torch", skip_if_nonfinite=flag)
    kernels.lerp_momentum_(ds, grads, 0.1, backend="triton", skip_if_nonfinite=flag)
    assert_lists_close(ds, ref, torch.float32)
    if not math.isfinite(guard):
        assert all(torch.equal(a, b) for a, b in zip(ds, make(ODD_SHAPES, torch.float32, 0)))


@pytest.mark.parametrize("with_params", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scion_inner_product_matches_reference(with_params, dtype):
    ds, dirs, params = make(ODD_SHAPES, torch.float32, 0), make(ODD_SHAPES, dtype, 1), make(ODD_SHAPES, dtype, 2)
    radii = [0.5, 2.0, 1.0, 3.0, 0.25, 1.5]
    x = params if with_params else None
    got = kernels.scion_inner_product(ds, dirs, radii, x, backend="triton")
    assert got.dtype == torch.float32 and got.dim() == 0
    torch.testing.assert_close(got, kernels.scion_inner_product(ds, dirs, radii, x, backend="torch"),
                               rtol=1e-5, atol=1e-5)
    assert torch.equal(got, kernels.scion_inner_product(ds, dirs, radii, x, backend="triton"))


def test_scion_inner_product_empty_and_many_tiny():
    assert kernels.scion_inner_product([], [], [], backend="triton").item() == 0.0
    ds, dirs = make(TINY_MANY, seed=0), make(TINY_MANY, seed=1)
    radii = [1.0 + i for i in range(len(ds))]
    torch.testing.assert_close(kernels.scion_inner_product(ds, dirs, radii, backend="triton"),
                               kernels.scion_inner_product(ds, dirs, radii, backend="torch"), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_scion_update_matches_reference(constrained, dtype):
    params, dirs = make(ODD_SHAPES, dtype, 0), make(ODD_SHAPES, dtype, 1)
    radii = [0.5, 2.0, 1.0, 3.0, 0.25, 1.5]
    scale = torch.tensor(0.4, device=DEVICE)
    ref = clone(params)
    kernels.scion_update_(ref, dirs, radii, lr=0.1, scale=scale, constrained=constrained, backend="torch")
    kernels.scion_update_(params, dirs, radii, lr=0.1, scale=scale, constrained=constrained, backend="triton")
    assert_lists_close(params, ref, dtype)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_scion_update_non_finite_scale_writes_nothing(bad):
    params, dirs = make(ODD_SHAPES, seed=0), make(ODD_SHAPES, seed=1)
    before = clone(params)
    kernels.scion_update_(params, dirs, [1.0] * 6, lr=0.1, scale=torch.tensor(bad, device=DEVICE),
                          constrained=True, backend="triton")
    assert all(torch.equal(a, b) for a, b in zip(params, before))


# ------------------------------------------------------------------------------------------ host syncs
def test_triton_steps_have_no_host_sync():
    from host_sync_guard import NoHostSync
    params, grads, momenta = make(ODD_SHAPES, seed=0), make(ODD_SHAPES, seed=1), make(ODD_SHAPES, seed=2)
    radii = [1.0] * len(params)
    dirs = [-torch.sign(g) for g in grads]
    kernels.global_norm(grads, backend="triton")  # first call builds and uploads the tables (no sync either)
    sync_debug = DEVICE == "cuda"
    if sync_debug:
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        with NoHostSync():
            norm = kernels.global_norm(grads, backend="triton")
            kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=0.1, rule="gclip", gamma=1.0,
                                        momentum=0.9, backend="triton")
            kernels.lerp_momentum_(momenta, grads, 0.1, backend="triton")
            dual = kernels.scion_inner_product(momenta, dirs, radii, backend="triton")
            kernels.scion_update_(params, dirs, radii, lr=0.1, scale=dual, constrained=False, backend="triton")
            kernels.global_norm([t + 1 for t in grads], backend="triton")  # a table cache miss: no sync either
    finally:
        if sync_debug:
            torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------- GPU only, real sizes
@pytest.mark.skipif(DEVICE != "cuda", reason="real sizes need a GPU")
def test_tensor_over_2_pow_31_elements():
    numel = 2**31 + 2**20 + 3
    with override_tuning(chunk_size=32768, max_block=2048):
        big = torch.ones(numel, dtype=torch.bfloat16, device=DEVICE)
        assert kernels.global_norm([big], backend="triton").item() == pytest.approx(math.sqrt(numel), rel=1e-6)
        grad = torch.ones_like(big)
        kernels.clipped_sgd_update_([big], [grad], None, torch.tensor(1.0, device=DEVICE), lr=0.5, rule="none",
                                    backend="triton")
        assert big[-4:].float().tolist() == [0.5] * 4 and big[:2].float().tolist() == [0.5] * 2


@pytest.mark.skipif(DEVICE != "cuda", reason="real sizes need a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpt2_124m_sized_step_matches_reference(dtype):
    from clipgpt_kernels.bench_cases import make_tensors
    with override_tuning(chunk_size=32768, max_block=2048):
        ts = make_tensors("gpt2-124m-classic", dtype, torch.device(DEVICE))
        ref_p, ref_m = clone(ts.params), clone(ts.momenta)
        norm = kernels.global_norm(ts.grads, backend="triton")
        torch.testing.assert_close(norm, kernels.global_norm(ts.grads, backend="torch"), rtol=1e-5, atol=0)
        for ps, ms, backend in ((ref_p, ref_m, "torch"), (ts.params, ts.momenta, "triton")):
            kernels.clipped_sgd_update_(ps, ts.grads, ms, norm, lr=0.01, rule="dgclip", gamma=0.5, delta=0.1,
                                        momentum=0.9, nesterov=True, weight_decay=0.1, backend=backend)
        assert_lists_close(ts.params, ref_p, dtype)
        assert_lists_close(ts.momenta, ref_m, dtype)


def test_optimizer_chunk_plan_is_built_once_then_reused():
    """The optimizer owns its chunk tables: gradient values changing in place rebuild nothing; new gradient
    storage (set_to_none-style) is detected and gets new tables."""
    import optim
    params = [torch.nn.Parameter(t) for t in make([(67,), (13, 5)])]
    opt = optim.DeltaGClip(params, lr=0.1, gamma=0.5, delta=0.1, momentum=0.9, backend="triton")
    reference = optim.DeltaGClip([torch.nn.Parameter(p.detach().clone()) for p in params], lr=0.1, gamma=0.5,
                                 delta=0.1, momentum=0.9, backend="torch")
    for p in params:
        p.grad = torch.zeros_like(p)
    for seed in range(4):
        for p, q, g in zip(params, reference.param_groups[0]["params"], make([(67,), (13, 5)], seed=seed + 1)):
            p.grad.copy_(g)  # new values, same storage (the trainer zeroes in place)
            q.grad = g.clone()
        opt.step()
        reference.step()
        if seed == 0:
            built = opt.chunk_plans.builds
    assert built == 2  # global_norm + the update, once
    assert opt.chunk_plans.builds == built
    for p, q in zip(params, reference.param_groups[0]["params"]):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-6)
    for p in params:
        p.grad = torch.randn_like(p)  # new storage
    opt.step()
    assert opt.chunk_plans.builds == built + 2


# ------------------------------------------------------------------------ lr in device memory (CUDA graphs)
def test_clipped_sgd_update_tensor_lr_matches_float_lr():
    params, grads, momenta = make(ODD_SHAPES, seed=0), make(ODD_SHAPES, seed=1), make(ODD_SHAPES, seed=2)
    ref_p, ref_m = clone(params), clone(momenta)
    norm = kernels.global_norm(grads, backend="triton")
    case = dict(rule="dgclip", gamma=0.5, delta=0.3, momentum=0.9, weight_decay=0.1, weight_decay_mode="decoupled")
    kernels.clipped_sgd_update_(ref_p, grads, ref_m, norm, lr=0.1, backend="triton", **case)
    lr = torch.tensor(0.1, device=DEVICE)
    with count_launches() as counter:
        kernels.clipped_sgd_update_(params, grads, momenta, norm, lr=lr, backend="triton", **case)
    assert counter.names == ["_clipped_sgd_kernel"]  # a tensor lr runs the kernel, not the reference
    assert_lists_close(params, ref_p, torch.float32)
    assert_lists_close(momenta, ref_m, torch.float32)


def _frozen_args(calls):
    """A launch's arguments as a CUDA graph would keep them: numbers by value, tensors by dtype and shape (a
    tensor made during the step gets the same address on every replay from the graph's memory pool)."""
    def freeze(v):
        return ("tensor", v.dtype, tuple(v.shape)) if isinstance(v, torch.Tensor) else v
    return [(name, grid, tuple(map(freeze, args)), tuple(sorted((k, freeze(v)) for k, v in kwargs.items())))
            for name, grid, args, kwargs in calls]


@pytest.mark.parametrize("name", ["dgclip", "unconstrained_clipped_scion"])
def test_a_scheduled_lr_reaches_the_kernels_only_through_device_memory(name):
    """With the lr on the device, every step of a changing schedule launches the same kernels with the same
    arguments (numbers equal, tensors at the same addresses): a captured step would replay it correctly. The
    lr still changes the result (equal to the float-lr reference), and no chunk table is rebuilt."""
    import optim
    from tests.optim.test_every_optimizer import config, tiny_model
    cfg = config(name)
    cfg.backend = "triton"
    models = [tiny_model(tie=False) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    opts = [optim.build(m, cfg) for m in models]
    opts[0].keep_lr_on_device()
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, lambda s: 1.0 / (s + 1)) for o in opts]
    params = [list(m.parameters()) for m in models]
    launches, builds = [], []
    with override_tuning(chunk_size=1024, max_block=256):  # fewer interpreted programs for the model's tensors
        last_calls = run_steps(opts, scheds, params, launches, builds)
    assert launches[0] and launches[1] == launches[0] and launches[2] == launches[0]
    assert builds[1] == builds[0] == builds[2]
    lr_addresses = {t.data_ptr() for t in opts[0].__dict__["_lr_tensors"]}
    for kernel, _, args, _ in last_calls:  # the update reads the optimizer's own lr tensor, not a copy
        if kernel == "_clipped_sgd_kernel":
            assert args[2].data_ptr() in lr_addresses
    assert opts[0].param_groups[0]["lr"] != scheds[0].base_lrs[0]  # the schedule moved (a float, torch's contract)


def run_steps(opts, scheds, params, launches, builds):
    for step in range(3):
        for ps in params:
            for i, p in enumerate(ps):
                g = torch.randn(p.shape, generator=torch.Generator().manual_seed(100 * step + i))
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)  # storage stays put, as the trainer keeps it
        with count_launches() as counter:
            opts[0].step()
        opts[1].step()
        launches.append(_frozen_args(counter.calls))
        builds.append(opts[0].chunk_plans.builds)
        for s in scheds:
            s.step()
        for a, b in zip(*params):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    return counter.calls
