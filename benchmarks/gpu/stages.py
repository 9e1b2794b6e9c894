"""The stages of ``python -m benchmarks.gpu``: what each runs (real sizes on a GPU, toy sizes with ``--dry-run``), the
file it leaves in the results folder and the lines it contributes to summary.md.

A stage's command is a subprocess argv, or a string saying why the stage is not available here (e.g. a CUDA graph on
the CPU). Stages come in priority order: when the budget runs short, the tail is what gets skipped.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union

TRAINER_OPTIMIZERS = ("adamw", "dgclip", "unconstrained_clipped_scion", "muon")
DRY_RUN_TESTS = ["tests/optim/test_capture.py", "tests/kernels/test_kernels_triton.py"]


@dataclass
class Context:
    out_dir: Path
    dry_run: bool
    cuda: bool
    python: str = sys.executable

    def path(self, name: str) -> str:
        return str(self.out_dir / name)


Command = Union[list, str]  # an argv, or why the stage cannot run here


@dataclass
class Stage:
    name: str
    title: str
    command: Callable[[Context], Command]
    output: str | None  # the file the command writes into the results folder
    summarize: Callable[[dict], list[str]]
    min_s: float = 30.0  # on a GPU: not started with less time left (a dry run needs a few seconds)


# ------------------------------------------------------------------------------------------ (a) CUDA tests
def cuda_tests_command(ctx: Context) -> Command:
    targets = DRY_RUN_TESTS if ctx.dry_run else ["tests"]
    return [ctx.python, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-o", "addopts=",
            f"--junitxml={ctx.path('cuda_tests.xml')}", *targets]


def read_junit(path: Path) -> dict:
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed_tests": failed}


def summarize_tests(result: dict) -> list[str]:
    lines = [f"{result['passed']} passed, {result['failures'] + result['errors']} failed, "
             f"{result['skipped']} skipped (pytest -m gpu)"]
    return lines + [f"- failed: `{name}`" for name in result["failed_tests"][:20]]


# ------------------------------------------------------------------------- (b, d) optimizer step and kernels
def optim_bench_command(ctx: Context) -> Command:
    size = ["--size", "small", "--steps", "1", "--warmup", "0", "--device", "cpu", "--only", "dgclip", "adamw",
            "--no-compile", "--ns-dtype", "float32", "--threads", "1"] if ctx.dry_run else ["--size", "anchor"]
    return [ctx.python, "-m", "optim.bench", *size, "--compare", "--captured", "--out", ctx.path("optim_bench.json")]


def summarize_optim(result: dict) -> list[str]:
    lines = [f"{result['tensors']} tensors, {result['numel'] / 1e6:.1f}M elements on {result['device_name']}", "",
             "| optimizer | step ms | x fused AdamW | captured ms | captured speedup |", "|---|---|---|---|---|"]
    for name, entry in result["results"].items():
        captured = entry.get("captured_step_ms")
        lines.append(f"| {name} | {entry['step_ms']:.3f} | {fmt(entry.get('vs_fused_adamw'), '.2f')} | "
                     f"{fmt(captured, '.3f')} | {fmt(entry.get('captured_speedup'), '.2f')} |")
    if isinstance(result.get("captured"), str) and result["captured"].startswith("not available"):
        lines.append(f"\ncaptured steps: {result['captured']}")
    comparison = result.get("dgclip_comparison")
    if comparison:
        lines += ["", "delta-GClip + momentum, whole step:", "", "| implementation | ms | x ours |", "|---|---|---|"]
        lines += [f"| {k} | {v:.3f} | {comparison['vs_ours'][k]:.2f} |" for k, v in comparison["step_ms"].items()]
    return lines


def kernels_bench_command(ctx: Context) -> Command:
    size = ["--model", "tiny", "--backend", "torch", "--reps", "1", "--warmup", "0", "--device", "cpu",
            "--threads", "1"] if ctx.dry_run else []
    return [ctx.python, "-m", "kernels.bench", *size, "--out", ctx.path("kernels_bench.json")]


def summarize_kernels(result: dict) -> list[str]:
    lines = [f"{result['device']}", "", "| set | dtype | kernel | impl | ms | graph ms | % copy |", "|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        for r in run["results"]:
            lines.append(f"| {run['model']} | {run['dtype']} | {r['kernel']} | {r['impl']} | {fmt(r['median_ms'], '.3f')} "
                         f"| {fmt(r['cuda_graph_median_ms'], '.3f')} | {fmt(r['pct_of_copy'], '.1f')} |")
    return lines


# ------------------------------------------------------------------------------------- (c, d) training
def trainer_command(optimizer: str, *overrides: str) -> Callable[[Context], Command]:
    def command(ctx: Context) -> Command:
        size = (["--config", "configs/tiny.toml", "--steps", "2", "--warmup", "1", "--micro-batch", "2",
                 "--train.eval_tokens=128"] if ctx.dry_run else
                ["--config", "configs/gpt2-124m.toml", "--steps", "60", "--warmup", "20", "--micro-batch", "32"])
        name = trainer_file(optimizer, overrides)
        return [ctx.python, "-m", "trainer.bench", "--optims", optimizer, *size, "--out", ctx.path(name),
                *overrides]
    return command


def trainer_file(optimizer: str, overrides) -> str:
    suffix = "".join("_" + o.split("=")[0].removeprefix("--optim.") for o in overrides)
    return f"trainer_{optimizer}{suffix}.json"


def needs_cuda(command: Callable[[Context], Command], what: str) -> Callable[[Context], Command]:
    return lambda ctx: command(ctx) if ctx.cuda else f"not available: {what} needs CUDA"


def needs_setting(command: Callable[[Context], Command], key: str, what: str) -> Callable[[Context], Command]:
    """Runs only once ``optim.<key>`` exists in the config tree (a later change brings it)."""
    def guarded(ctx: Context) -> Command:
        from optim.config import OptimConfig
        if key not in {f.name for f in dataclasses.fields(OptimConfig)}:
            return f"not available: {what} (optim.{key}) has not landed yet"
        return command(ctx)
    return guarded


def summarize_trainer(result: dict) -> list[str]:
    lines = ["| optimizer | step ms | tokens/s | MFU | data ms | fwd+bwd ms | optimizer ms | host read ms |",
             "|---|---|---|---|---|---|---|---|"]
    for row in result["results"]:
        b = row.get("breakdown_ms", {})
        label = " ".join([row["optim"], *result.get("overrides", [])])
        lines.append(f"| {label} | "
                     f"{row['median_step_time_s'] * 1e3:.1f} | {row['tokens_per_s']:,.0f} | {fmt(row['mfu'], '.1%')} | "
                     f"{fmt(b.get('data'), '.2f')} | {fmt(b.get('fwd_bwd'), '.1f')} | {fmt(b.get('optimizer'), '.2f')} | "
                     f"{fmt(b.get('host_read'), '.2f')} |")
    return lines


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


STAGES: list[Stage] = [
    Stage("cuda_tests", "(a) CUDA-only tests, kernels against torch references at real sizes (fp32, bf16)",
          cuda_tests_command, "cuda_tests.xml", summarize_tests, min_s=60),
    Stage("optim_bench", "(b, d) optimizer step at the anchor set: vs torch eager / compile / compile + CUDA graph / "
          "fused AdamW / copy floor; eager vs captured step", optim_bench_command, "optim_bench.json", summarize_optim),
    *[Stage(f"trainer_{name}", f"(c) training throughput, GPT-2 124M, {name}", trainer_command(name),
            trainer_file(name, ()), summarize_trainer, min_s=60) for name in TRAINER_OPTIMIZERS],
    Stage("trainer_dgclip_cuda_graph", "(d) training throughput, dgclip with optim.cuda_graph=true (vs trainer_dgclip)",
          needs_cuda(trainer_command("dgclip", "--optim.cuda_graph=true"), "a CUDA graph"),
          trainer_file("dgclip", ("--optim.cuda_graph=true",)), summarize_trainer, min_s=60),
    Stage("trainer_dgclip_norm_in_backward", "(d) training throughput, dgclip with the norm taken during backward "
          "(vs trainer_dgclip)", needs_setting(trainer_command("dgclip", "--optim.norm_in_backward=true"),
                                               "norm_in_backward", "the gradient norm during backward (issue 21 item 3)"),
          trainer_file("dgclip", ("--optim.norm_in_backward=true",)), summarize_trainer, min_s=60),
    Stage("kernels_bench", "(b) kernel microbenchmark: Triton vs torch eager vs torch.compile, % of copy bandwidth",
          kernels_bench_command, "kernels_bench.json", summarize_kernels, min_s=60),
]
STAGE_NAMES = [s.name for s in STAGES]


def load_output(stage: Stage, ctx: Context) -> dict | None:
    """The stage's result file, parsed (None when the command left none)."""
    if stage.output is None:
        return None
    path = ctx.out_dir / stage.output
    if not path.exists():
        return None
    return read_junit(path) if path.suffix == ".xml" else json.loads(path.read_text())
