"""Time of the whole `optimizer.step()` on GPT-2 124M parameter sets, every registry optimizer against fused AdamW,
and the delta-GClip + momentum step side by side with the same update written in torch.

    python -m optim.bench                       # 124M shapes (GPU), writes benchmarks/results/optim-step-<device>.json
    python -m optim.bench --size anchor         # the anchor set of published measurements (below)
    python -m optim.bench --size small --threads 1 --ns-dtype float32   # scaled-down shapes, CPU, seconds

Parameter sets are built from the shapes alone, named as the model names them so the group rules apply:
``124m`` is the Clipped Scion NanoGPT model (12 blocks of qkv (3d, d), proj (d, d), fc (4d, d), proj (d, 4d) and the
tied (50304, d) embedding/head; no norm gains); ``anchor`` is untied GPT-2 124M without biases in fp32, 74 tensors /
162.2M elements (embedding and head 50304 x 768, 12 x (qkv, proj, fc, mlp proj, two 768 norm gains)).
Gradients are fixed random tensors; a time is the median of `--steps` timed calls after `--warmup` untimed ones
(CUDA-synchronized on GPU). `--compare` adds, for delta-GClip with heavy-ball momentum (coupled weight decay 0):
our `DeltaGClip.step()`, the same math as eager torch foreach ops, that function under `torch.compile` (with CUDA
graphs on a GPU: mode "reduce-overhead") and fused AdamW. The torch versions leave out the non-finite skip.
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


def compare_dgclip(named, *, steps: int, warmup: int, compile_mode: str | None = None) -> dict:
    """The whole delta-GClip + momentum step, ours against the same math in torch, and fused AdamW."""
    device = named[0][1].device
    hyper = dict(lr=0.1, gamma=1.0, delta=1e-3, momentum=0.9)

    def fresh():
        out = [(n, torch.nn.Parameter(p.detach().clone())) for n, p in named]
        for (_, new), (_, old) in zip(out, named):
            new.grad = old.grad.clone()
        return out

    ours = REGISTRY["dgclip"].build(fresh(), OptimConfig(name="dgclip", lr=hyper["lr"], gamma=hyper["gamma"],
                                                         delta=hyper["delta"], momentum=hyper["momentum"]))
    adamw = REGISTRY["adamw"].build(fresh(), OptimConfig(name="adamw"))
    params = [p.detach() for _, p in fresh()]  # plain tensors: updated in place outside autograd
    grads, momenta = [p.grad for _, p in named], [torch.zeros_like(p) for p in params]
    mode = compile_mode or ("reduce-overhead" if device.type == "cuda" else "default")
    compiled = torch.compile(dgclip_momentum_foreach, mode=mode)
    results = {
        "ours": _median_ms(ours.step, device, steps, warmup),
        "torch_eager_foreach": _median_ms(lambda: dgclip_momentum_foreach(params, grads, momenta, **hyper),
                                          device, steps, warmup),
        f"torch_compile_{mode}": _median_ms(lambda: compiled(params, grads, momenta, **hyper), device, steps,
                                            max(warmup, 3)),
        "fused_adamw": _median_ms(adamw.step, device, steps, warmup),
    }
    return {"step_ms": results, "vs_ours": {k: v / results["ours"] for k, v in results.items()},
            "hyperparameters": hyper, "compile_mode": mode}


def time_optimizer(name: str, named, *, steps: int, warmup: int, ns_dtype: str) -> float:
    kwargs = dict(HYPERPARAMETERS.get(name, {}))
    if name == "muon" or "scion" in name:
        kwargs["ns_dtype"] = ns_dtype
    optimizer = REGISTRY[name].build(named, OptimConfig(name=name, **kwargs))
    device = named[0][1].device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        optimizer.step()
    times = []
    for _ in range(steps):
        sync()
        t0 = time.perf_counter()
        optimizer.step()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def run(size: str = "124m", steps: int = 20, warmup: int = 3, names: list[str] | None = None,
        device: str | None = None, ns_dtype: str = "bfloat16", compare: bool = False) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    named = parameter_set(**SIZES[size], device=device)
    names = names or list(REGISTRY)
    results = {}
    for name in names:
        fresh = [(n, torch.nn.Parameter(p.detach().clone())) for n, p in named]
        for (_, new), (_, old) in zip(fresh, named):
            new.grad = old.grad.clone()
        results[name] = {"step_ms": time_optimizer(name, fresh, steps=steps, warmup=warmup, ns_dtype=ns_dtype)}
    base = results.get("adamw", {}).get("step_ms")
    for entry in results.values():
        entry["vs_fused_adamw"] = entry["step_ms"] / base if base else None
    overhead = {}
    for clipped, plain in (("unconstrained_clipped_scion", "unconstrained_scion"), ("clipped_scion", "scion")):
        if clipped in results and plain in results:
            overhead[clipped] = results[clipped]["step_ms"] / results[plain]["step_ms"] - 1
    comparison = compare_dgclip(named, steps=steps, warmup=warmup) if compare else None
    return {
        "benchmark": "optimizer step time", "size": size, "shapes": SIZES[size],
        "numel": sum(p.numel() for _, p in named), "tensors": len(named), "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "cpu_threads": torch.get_num_threads(), "ns_dtype": ns_dtype, "steps": steps, "warmup": warmup,
        "results": results, "clipping_overhead_vs_unclipped": overhead, "dgclip_comparison": comparison,
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
    parser.add_argument("--only", nargs="*", default=None, help="optimizer names (default: all)")
    parser.add_argument("--compare", action="store_true", help="also time the delta-GClip + momentum step against "
                                                               "eager foreach, torch.compile and fused AdamW")
    add_results_arguments(parser, "benchmarks/results/optim-step-<device>-<size>.json")
    args = parser.parse_args(argv)
    refuse_existing_out(args.out, args.overwrite)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(header(args.size, args.device, args.ns_dtype, args.steps, args.warmup), flush=True)
    report = run(args.size, args.steps, args.warmup, args.only, args.device, args.ns_dtype, args.compare)
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
