"""Microbenchmark of the kernels against torch eager foreach and torch.compile, relative to the copy bandwidth.

    python -m kernels.bench                                   # on a GPU: gpt2-124m and gpt2-1b, fp32 and bf16
    python -m kernels.bench --model gpt2-124m --dtype fp32 --kernels global_norm clip_step
    TRITON_INTERPRET=1 python -m kernels.bench --model tiny --backend triton torch --reps 1   # CPU smoke run

For every parameter set and kernel it prints a table and writes ``benchmarks/results/kernels-<device>.json``:
median time (``triton.testing.do_bench`` on a GPU, plus ``do_bench_cudagraph``; a wall-clock timer on CPU),
minimal bytes moved, GB/s, percent of the copy bandwidth measured in the same run, and speedups of Triton
over eager foreach and over torch.compile of the same torch code. Device name and versions are recorded.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import re
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from configs.cli import add_results_arguments, refuse_existing_out, results_path, written_note

from .bench_cases import DTYPES, KERNEL_NAMES, MODELS, build_cases, make_tensors
from .chunk_table import override_tuning, tuning
from .dispatch import triton_interpreter_enabled

REPO_ROOT = Path(__file__).resolve().parent.parent


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        model = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()).group(1).strip()
    except (OSError, AttributeError):
        model = platform.processor() or platform.machine()
    return f"CPU {model}"


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def time_cpu(fn, warmup: int, reps: int) -> float:
    """Median wall-clock milliseconds of ``fn()`` (CPU tensors finish when the call returns)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_gpu(fn, cuda_graph: bool) -> float:
    import triton.testing
    if cuda_graph:
        return triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def measure(fn, device: torch.device, args) -> dict:
    """Median time, and on a GPU also the CUDA-graph replay time; an implementation that fails is recorded."""
    out = {"median_ms": None, "cuda_graph_median_ms": None, "error": None}
    try:
        if device.type == "cuda":
            out["median_ms"] = time_gpu(fn, cuda_graph=False)
            try:
                out["cuda_graph_median_ms"] = time_gpu(fn, cuda_graph=True)
            except Exception as exc:  # capture can fail for code that syncs; keep the eager number
                out["error"] = f"cuda graph: {type(exc).__name__}: {exc}"[:300]
        else:
            out["median_ms"] = time_cpu(fn, args.warmup, args.reps)
    except Exception as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:300]
    return out


def run_set(model: str, dtype_name: str, device: torch.device, args) -> dict:
    torch._dynamo.reset()  # compile each parameter set from scratch (no dynamic-shape recompiles)
    ts = make_tensors(model, DTYPES[dtype_name], device)
    cases = build_cases(ts, args.kernels, args.backend)
    rows, copy_gbps = [], None
    for case in cases:
        timings = {impl: measure(fn, device, args) for impl, fn in case.impls.items()}
        for impl, t in timings.items():
            ms = t["median_ms"]
            gbps = case.bytes / (ms * 1e6) if ms else None
            if case.name == "copy":
                copy_gbps = gbps
            row = dict(kernel=case.name, impl=impl, bytes=case.bytes, **t, GBps=gbps,
                       pct_of_copy=100 * gbps / copy_gbps if gbps and copy_gbps else None)
            if impl == "triton":
                for base in ("torch", "compile"):
                    other = timings.get(base, {})
                    for key, out_key in (("median_ms", f"speedup_vs_{base}"),
                                         ("cuda_graph_median_ms", f"cuda_graph_speedup_vs_{base}")):
                        if other.get(key) and t[key]:
                            row[out_key] = other[key] / t[key]
            rows.append(row)
    return dict(model=model, dtype=dtype_name, num_tensors=len(ts.params), num_elements=ts.numel,
                pass_bytes=ts.pass_bytes, copy_GBps=copy_gbps, results=rows)


# (title, result key, format): a column is shown only where some row has a value (on CPU there are no CUDA-graph
# times, and without Triton rows no speedups)
COLUMNS = (("ms", "median_ms", "10.3f"), ("graph ms", "cuda_graph_median_ms", "10.3f"), ("GB/s", "GBps", "10.1f"),
           ("%copy", "pct_of_copy", "8.1f"), ("x torch", "speedup_vs_torch", "9.2f"),
           ("x compile", "speedup_vs_compile", "10.2f"))


def format_table(run: dict) -> str:
    head = (f"{run['model']} {run['dtype']}: {run['num_tensors']} tensors, {run['num_elements'] / 1e6:.1f}M "
            f"elements, copy {run['copy_GBps'] or 0:.1f} GB/s")
    shown = [c for c in COLUMNS if any(isinstance(r.get(c[1]), (int, float)) for r in run["results"])]
    width = {key: int(spec.split(".")[0]) for _, key, spec in shown}
    lines = [head, f"{'kernel':22s}{'impl':9s}" + "".join(f"{title:>{width[key]}s}" for title, key, _ in shown)]

    def f(v, spec):
        return format(v, spec) if isinstance(v, (int, float)) else "-".rjust(int(spec.split(".")[0]))

    for r in run["results"]:
        lines.append(f"{r['kernel']:22s}{r['impl']:9s}" + "".join(f(r.get(key), spec) for _, key, spec in shown)
                     + (f"  [{r['error']}]" if r["error"] else ""))
    return "\n".join(lines)


def git_revision() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def parse_args(argv=None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(prog="python -m kernels.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", nargs="+", choices=sorted(MODELS),
                   default=["gpt2-124m", "gpt2-1b"] if cuda else ["gpt2-124m"], help="parameter sets")
    p.add_argument("--dtype", nargs="+", choices=sorted(DTYPES), default=["fp32", "bf16"] if cuda else ["fp32"],
                   help="dtype of params, grads and optimizer state")
    p.add_argument("--kernels", nargs="+", default=KERNEL_NAMES, choices=KERNEL_NAMES, help="what to time")
    default_backends = ["triton", "torch", "compile"] if cuda or triton_interpreter_enabled() else ["torch",
                                                                                                   "compile"]
    p.add_argument("--backend", nargs="+", choices=["triton", "torch", "compile"], default=default_backends,
                   help="implementations: triton kernels, torch eager foreach, torch.compile of the eager code")
    p.add_argument("--device", default="cuda" if cuda else "cpu")
    add_results_arguments(p, "benchmarks/results/kernels-<device>.json")
    p.add_argument("--warmup", type=int, default=3, help="CPU timer: untimed calls first")
    p.add_argument("--reps", type=int, default=10, help="CPU timer: timed calls (median reported)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU: torch.set_num_threads (1 gives stable numbers on a shared machine)")
    p.add_argument("--chunk-size", type=int, default=None, help="elements per program (default: kernels tuning)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    refuse_existing_out(args.out, args.overwrite)
    device = torch.device(args.device)
    if device.type == "cpu":  # torch.compile's CPU path logs "No CUDA runtime is found" when a CUDA toolkit is installed
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if "triton" in args.backend and device.type == "cpu" and not triton_interpreter_enabled():
        raise SystemExit("--backend triton on CPU needs TRITON_INTERPRET=1 (set before Python starts)")
    if args.threads:
        torch.set_num_threads(args.threads)
    name = device_name(device)
    import triton
    report = dict(device=name, device_type=device.type, torch=torch.__version__, triton=triton.__version__,
                  python=sys.version.split()[0], triton_interpret=triton_interpreter_enabled(),
                  git_revision=git_revision(), timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  command="python -m kernels.bench " + " ".join(argv if argv is not None else sys.argv[1:]),
                  timer="triton.testing.do_bench / do_bench_cudagraph (median)" if device.type == "cuda"
                  else f"wall clock, median of {args.reps} after {args.warmup} warm-up calls",
                  cpu_threads=torch.get_num_threads() if device.type == "cpu" else None,
                  chunk_size=args.chunk_size or tuning().chunk_size, runs=[])
    with override_tuning(chunk_size=args.chunk_size):
        for model in args.model:
            for dtype_name in args.dtype:
                run = run_set(model, dtype_name, device, args)
                print(format_table(run) + "\n", flush=True)
                report["runs"].append(run)
    default = REPO_ROOT / "benchmarks" / "results" / f"kernels-{slug(name)}.json"
    out = results_path(args.out, default, args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(written_note(out, default))
    return report


if __name__ == "__main__":
    main()
