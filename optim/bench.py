"""Time of the whole `optimizer.step()` on GPT-2 124M parameter sets, every registry optimizer against fused AdamW,
and the delta-GClip + momentum step side by side with the same update written in torch.

    python -m optim.bench                       # 124M shapes (GPU), writes benchmarks/results/optim-step-<device>.json
    python -m optim.bench --size anchor         # the anchor set of published measurements (below)
    python -m optim.bench --size small --threads 1 --ns-dtype float32   # scaled-down shapes, CPU, seconds
    python -m optim.bench --only clipped_scion clipped_scion_v1        # S3CG Variant 1's ||v|| against Variant 2
    python -m optim.bench --norm-estimate --threads 1 --steps 3         # its spectral-norm estimate vs Newton-Schulz

Parameter sets are built from the shapes alone, named as the model names them so the group rules apply:
``124m`` is the Clipped Scion NanoGPT model (12 blocks of qkv (3d, d), proj (d, d), fc (4d, d), proj (d, 4d) and the
tied (50304, d) embedding/head; no norm gains); ``anchor`` is untied GPT-2 124M without biases in fp32, 74 tensors /
162.2M elements (embedding and head 50304 x 768, 12 x (qkv, proj, fc, mlp proj, two 768 norm gains)).
Gradients are fixed random tensors; a time is the median of `--steps` timed calls after `--warmup` untimed ones
(CUDA-synchronized on GPU). `--compare` adds, for delta-GClip with heavy-ball momentum (coupled weight decay 0):
our `DeltaGClip.step()` (and on a GPU its CUDA-graph replay), the same math as eager torch foreach ops, that function
under `torch.compile` (and on a GPU with CUDA graphs, mode "reduce-overhead"), fused AdamW and the copy-bandwidth floor
of the step's 6 passes. The torch versions leave out the non-finite skip. `--captured` times every optimizer's step
replayed from a CUDA graph beside the eager one (optim.cuda_graph, GPU only).
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from configs.cli import add_results_arguments, refuse_existing_out, results_path, written_note

from .config import OptimConfig
from .registry import REGISTRY

SIZES = {"124m": dict(n_layer=12, d=768, vocab=50304), "medium": dict(n_layer=4, d=256, vocab=8192),
         "small": dict(n_layer=2, d=64, vocab=512), "anchor": dict(n_layer=12, d=768, vocab=50304, untied=True)}
HYPERPARAMETERS = {"gclip": dict(gamma=1.0), "dgclip": dict(gamma=1.0, delta=1e-3), "sgd": dict(momentum=0.9),
                   "muon": dict(lr=0.02)}
# extra entries of --only: a registry optimizer with other settings
VARIANTS = {"clipped_scion_v1": ("clipped_scion", dict(s3cg_variant=1))}  # S3CG Variant 1: + ||v|| of every layer


def shapes_of(n_layer: int, d: int, vocab: int, untied: bool = False) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of a set: tied embedding and hidden matrices, or with ``untied`` also the head and norm gains."""
    shapes = [("embed.weight", (vocab, d))] + ([("head.weight", (vocab, d))] if untied else [])
    for i in range(n_layer):
        shapes += [(f"blocks.{i}.attn.qkv.weight", (3 * d, d)), (f"blocks.{i}.attn.proj.weight", (d, d)),
                   (f"blocks.{i}.mlp.fc.weight", (4 * d, d)), (f"blocks.{i}.mlp.proj.weight", (d, 4 * d))]
        if untied:
            shapes += [(f"blocks.{i}.norm1.weight", (d,)), (f"blocks.{i}.norm2.weight", (d,))]
    return shapes


def parameter_set(n_layer: int, d: int, vocab: int, device, dtype=torch.float32, untied: bool = False
                  ) -> list[tuple[str, torch.Tensor]]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    named = []
    for name, shape in shapes_of(n_layer, d, vocab, untied):
        p = torch.nn.Parameter((0.02 * torch.randn(shape, generator=gen)).to(device, dtype))
        p.grad = (1e-3 * torch.randn(shape, generator=gen)).to(device, dtype)
        named.append((name, p))
    return named


def dgclip_momentum_foreach(params, grads, momenta, *, lr: float, gamma: float, delta: float, momentum: float):
    """delta-GClip + heavy-ball momentum as plain torch foreach ops (the baseline; no non-finite skip)."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    c = torch.clamp(gamma / norm, min=delta, max=1.0)
    torch._foreach_mul_(momenta, momentum)
    torch._foreach_add_(momenta, torch._foreach_mul(grads, c))
    torch._foreach_add_(params, momenta, alpha=-lr)


def _median_ms(fn, device: torch.device, steps: int, warmup: int) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def timed_step(optimizer, capture: bool):
    """``optimizer.step``, or with ``capture`` its CUDA-graph replay (optim.CapturedStep, 2 eager warm-up steps)."""
    if not capture:
        return optimizer.step
    from .capture import CapturedStep
    return CapturedStep(optimizer, warmup=2)


def copy_floor_ms(numel: int, passes: int, device: torch.device, steps: int, warmup: int) -> float:
    """The time ``passes`` fp32 passes over ``numel`` elements take at this device's copy bandwidth (a copy is 2)."""
    src = torch.ones(numel, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    return _median_ms(lambda: dst.copy_(src), device, steps, warmup) * passes / 2


def compare_dgclip(named, *, steps: int, warmup: int, with_compile: bool = True) -> dict:
    """The whole delta-GClip + momentum step, ours (eager and, on CUDA, replayed from a CUDA graph) against the same
    math in torch (eager foreach; torch.compile; torch.compile with CUDA graphs on CUDA), fused AdamW, and the copy
    bandwidth floor of the step's 6 passes (norm: read g; update: read g, m, p, write m, p)."""
    device = named[0][1].device
    cuda = device.type == "cuda"
    hyper = dict(lr=0.1, gamma=1.0, delta=1e-3, momentum=0.9)

    def fresh():
        out = [(n, torch.nn.Parameter(p.detach().clone())) for n, p in named]
        for (_, new), (_, old) in zip(out, named):
            new.grad = old.grad.clone()
        return out

    def ours():
        return REGISTRY["dgclip"].build(fresh(), OptimConfig(name="dgclip", lr=hyper["lr"], gamma=hyper["gamma"],
                                                             delta=hyper["delta"], momentum=hyper["momentum"]))

    adamw = REGISTRY["adamw"].build(fresh(), OptimConfig(name="adamw"))
    params = [p.detach() for _, p in fresh()]  # plain tensors: updated in place outside autograd
    grads, momenta = [p.grad for _, p in named], [torch.zeros_like(p) for p in params]

    def torch_step(fn):
        return lambda: fn(params, grads, momenta, **hyper)

    results = {"ours": _median_ms(ours().step, device, steps, warmup)}
    if cuda:
        results["ours_cuda_graph"] = _median_ms(timed_step(ours(), True), device, steps, max(warmup, 3))
    results["torch_eager_foreach"] = _median_ms(torch_step(dgclip_momentum_foreach), device, steps, warmup)
    for mode in (("default", "reduce-overhead") if cuda else ("default",)) if with_compile else ():
        torch._dynamo.reset()  # each mode compiles from scratch
        key = "torch_compile" if mode == "default" else "torch_compile_cuda_graph"
        results[key] = _median_ms(torch_step(torch.compile(dgclip_momentum_foreach, mode=mode)), device, steps,
                                  max(warmup, 3))
    results["fused_adamw"] = _median_ms(adamw.step, device, steps, warmup)
    numel = sum(p.numel() for _, p in named)
    results["copy_floor_6_passes"] = copy_floor_ms(numel, 6, device, steps, warmup)
    return {"step_ms": results, "vs_ours": {k: v / results["ours"] for k, v in results.items()},
            "hyperparameters": hyper, "compile": with_compile}


def time_optimizer(name: str, named, *, steps: int, warmup: int, ns_dtype: str, capture: bool = False) -> float:
    name, kwargs = VARIANTS.get(name, (name, {}))
    kwargs = {**HYPERPARAMETERS.get(name, {}), **kwargs}
    if name == "muon" or "scion" in name:
        kwargs["ns_dtype"] = ns_dtype
    optimizer = REGISTRY[name].build(named, OptimConfig(name=name, **kwargs))
    device = named[0][1].device
    return _median_ms(timed_step(optimizer, capture), device, steps, max(warmup, 3) if capture else warmup)


def time_norm_estimate(shapes=((256, 256), (768, 768), (768, 3072)), repeats: int = 3) -> dict:
    """S3CG Variant 1's spectral-norm estimate (optim.lmo.spectral_norm_estimate) of one matrix against the 20-step
    power iteration it replaced and against Newton-Schulz (bf16 and fp32) of the same matrix: median ms, ratios."""
    from .lmo import spectral_norm_estimate
    from .newton_schulz import newton_schulz5

    def power_iteration_20(M):
        u = torch.ones(M.size(-1), dtype=M.dtype, device=M.device)
        for _ in range(20):
            u = M.mT @ (M @ u)
            u = u / (u.norm() + 1e-30)
        return (M @ u).norm()

    out = {}
    for shape in shapes:
        M = torch.randn(shape, device="cuda" if torch.cuda.is_available() else "cpu")
        fns = {"squaring_12": spectral_norm_estimate, "power_iteration_20": power_iteration_20,
               "newton_schulz5_bf16": newton_schulz5,
               "newton_schulz5_fp32": lambda M: newton_schulz5(M, 5, torch.float32)}
        ms = {name: _median_ms(lambda f=f: f(M), M.device, repeats, 1) for name, f in fns.items()}
        out["x".join(map(str, shape))] = {"ms": ms, **{f"squaring_vs_{k}": ms["squaring_12"] / v
                                                        for k, v in ms.items() if k != "squaring_12"}}
    return out


def run(size: str = "124m", steps: int = 20, warmup: int = 3, names: list[str] | None = None,
        device: str | None = None, ns_dtype: str = "bfloat16", compare: bool = False, captured: bool = False,
        with_compile: bool = True) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    named = parameter_set(**SIZES[size], device=device)
    names = names or list(REGISTRY)
    results = {}
    for name in names:
        fresh = [(n, torch.nn.Parameter(p.detach().clone())) for n, p in named]
        for (_, new), (_, old) in zip(fresh, named):
            new.grad = old.grad.clone()
        results[name] = {"step_ms": time_optimizer(name, fresh, steps=steps, warmup=warmup, ns_dtype=ns_dtype)}
        if captured and device.type == "cuda":  # the same step replayed from a CUDA graph (optim.cuda_graph)
            for (_, p), (_, old) in zip(fresh, named):
                p.grad.copy_(old.grad)
            ms = time_optimizer(name, fresh, steps=steps, warmup=warmup, ns_dtype=ns_dtype, capture=True)
            results[name].update(captured_step_ms=ms, captured_speedup=results[name]["step_ms"] / ms)
    base = results.get("adamw", {}).get("step_ms")
    for entry in results.values():
        entry["vs_fused_adamw"] = entry["step_ms"] / base if base else None
    overhead = {}
    for clipped, plain in (("unconstrained_clipped_scion", "unconstrained_scion"), ("clipped_scion", "scion"),
                           ("clipped_scion_v1", "clipped_scion")):
        if clipped in results and plain in results:
            overhead[clipped] = results[clipped]["step_ms"] / results[plain]["step_ms"] - 1
    comparison = compare_dgclip(named, steps=steps, warmup=warmup, with_compile=with_compile) if compare else None
    return {
        "benchmark": "optimizer step time", "size": size, "shapes": SIZES[size],
        "numel": sum(p.numel() for _, p in named), "tensors": len(named), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "ns_dtype": ns_dtype, "steps": steps, "warmup": warmup,
        "results": results, "clipping_overhead_vs_unclipped": overhead, "dgclip_comparison": comparison,
        "captured": ("per optimizer: captured_step_ms" if device.type == "cuda" else "not available: needs CUDA")
        if captured else None,
        "targets": "clipped_scion clipping < 2% of the Scion step; dgclip no slower than fused AdamW",
    }


def header(size: str, device: str | None, ns_dtype: str, steps: int, warmup: int) -> str:
    """What is timed and where, printed before the timings: size, device, threads, dtypes, steps."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"cpu ({platform.processor() or platform.machine()}), {torch.get_num_threads()} torch threads")
    numel = sum(torch.Size(shape).numel() for _, shape in shapes_of(**SIZES[size]))
    return (f"optim.bench: size {size} ({len(shapes_of(**SIZES[size]))} tensors, {numel / 1e6:.1f}M elements) on "
            f"{where}; parameters, gradients and state float32, Newton-Schulz {ns_dtype}; median of {steps} steps "
            f"after {warmup} warm-up")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="124m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default=None)
    parser.add_argument("--ns-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (use 1 on a shared machine: spinning threads distort CPU timings)")
    parser.add_argument("--only", nargs="*", default=None, help="optimizer names (default: all registry "
                                                                "optimizers), or clipped_scion_v1 (S3CG Variant 1)")
    parser.add_argument("--compare", action="store_true", help="also time the delta-GClip + momentum step against "
                                                               "eager foreach, torch.compile and fused AdamW")
    parser.add_argument("--captured", action="store_true", help="also time each step replayed from a CUDA graph "
                                                                "(optim.cuda_graph; CUDA only)")
    parser.add_argument("--no-compile", action="store_true", help="--compare without the torch.compile variants "
                                                                  "(quick CPU runs)")
    add_results_arguments(parser, "benchmarks/results/optim-step-<device>-<size>.json")
    parser.add_argument("--norm-estimate", action="store_true", help="only time S3CG Variant 1's spectral-norm "
                                                                     "estimate against Newton-Schulz, one matrix")
    args = parser.parse_args(argv)
    refuse_existing_out(args.out, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.norm_estimate:
        report = {"benchmark": "spectral-norm estimate vs Newton-Schulz", "torch": torch.__version__,
                  "cpu_threads": torch.get_num_threads(), "results": time_norm_estimate(repeats=args.steps)}
        tag = "cuda" if torch.cuda.is_available() else "cpu"
        default = Path(f"benchmarks/results/s3cg-variant1-norm-estimate-{tag}.json")
        out = results_path(args.out, default, args.overwrite)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report["results"], indent=1))
        print(written_note(out, default))
        return report
    print(header(args.size, args.device, args.ns_dtype, args.steps, args.warmup), flush=True)
    report = run(args.size, args.steps, args.warmup, args.only, args.device, args.ns_dtype, args.compare,
                 args.captured, not args.no_compile)
    tag = "cpu" if report["device"] == "cpu" else report["device_name"].lower().replace(" ", "-")
    default = Path(f"benchmarks/results/optim-step-{tag}-{args.size}.json")
    out = results_path(args.out, default, args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    for name, entry in report["results"].items():
        ratio = entry["vs_fused_adamw"]
        print(f"{name:<28} {entry['step_ms']:9.3f} ms  {ratio:6.2f}x fused AdamW" if ratio else name)
    for name, value in report["clipping_overhead_vs_unclipped"].items():
        print(f"clipping overhead of {name}: {100 * value:+.1f}%")
    if report["dgclip_comparison"]:
        print("delta-GClip + momentum, whole step:")
        for name, ms in report["dgclip_comparison"]["step_ms"].items():
            print(f"  {name:<32} {ms:9.3f} ms  {report['dgclip_comparison']['vs_ours'][name]:6.2f}x ours")
    print(written_note(out, default))
    return report


if __name__ == "__main__":
    main()
