"""Launch trainer runs, one per `RunSpec`, skipping those already complete (so a comparison is resumable).

A run is complete when its final checkpoint ``<out_dir>/checkpoints/step_<steps:07d>.pt`` exists and
``metrics.jsonl`` holds the record of step ``train.steps``. An incomplete run is simply launched again with
the same command: the trainer resumes from its newest checkpoint.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from configs.base import ConfigError
from configs.schema import Config, load_config

from .runfiles import read_records

REPO_ROOT = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO_ROOT / "train_gpt.py"


@dataclass
class RunSpec:
    """One trainer run: a name (its directory under the comparison's folder) and its `--key=value` overrides."""
    name: str
    out_dir: Path
    overrides: list[str] = field(default_factory=list)

    def args(self, config_path: str) -> list[str]:
        return ["--config", str(config_path), *self.overrides, f"--train.out_dir={self.out_dir}"]


@dataclass
class RunResult:
    name: str
    status: str  # "complete" (skipped), "ok", "stopped" (clean exit before the last step), "failed", "pending"
    returncode: int = 0
    seconds: float = 0.0


def resolve(spec: RunSpec, config_path: str) -> Config:
    """The validated config of `spec` (raises ConfigError naming the run and the key at fault)."""
    try:
        return load_config(spec.args(config_path))
    except (ConfigError, ValueError) as err:
        raise ConfigError(f"run {spec.name!r}: {err}") from err


def is_complete(out_dir: str | Path, steps: int) -> bool:
    out_dir = Path(out_dir)
    if not (out_dir / "checkpoints" / f"step_{steps:07d}.pt").exists():
        return False
    return any(r.get("step") == steps for r in read_records(out_dir / "metrics.jsonl"))


def progress(out_dir: str | Path, steps: int) -> str:
    """`step 120/200, train loss 5.612, val loss 5.701 (step 100)` from a run's metrics.jsonl so far."""
    records = read_records(Path(out_dir) / "metrics.jsonl")
    if not records:
        return f"step 0/{steps}"
    text = f"step {records[-1]['step']}/{steps}"
    if isinstance(records[-1].get("train_loss"), (int, float)):
        text += f", train loss {records[-1]['train_loss']:.3f}"
    vals = [r for r in records if isinstance(r.get("val_loss"), (int, float))]
    if vals:
        text += f", val loss {vals[-1]['val_loss']:.3f} (step {vals[-1]['step']})"
    return text


def command(spec: RunSpec, config_path: str, nproc: int = 0) -> list[str]:
    """`python train_gpt.py ...`, or `torchrun --standalone --nproc_per_node=N train_gpt.py ...` when nproc > 0."""
    if nproc:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    else:
        launcher = [sys.executable]
    return [*launcher, str(TRAIN_SCRIPT), *spec.args(config_path)]


def child_env(jobs: int) -> dict:
    """The environment of a run: the repo on PYTHONPATH, and with parallel jobs a share of the CPU threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if jobs > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    return env


def run_all(specs: list[RunSpec], config_path: str, *, nproc: int = 0, jobs: int = 1,
            dry_run: bool = False, log=print, progress_every_s: float = 60.0) -> list[RunResult]:
    """Validate every spec first, then run the incomplete ones, `jobs` at a time. Each run's output goes to
    ``<out_dir>/launch.log`` (named when it starts); every ``progress_every_s`` a line per running run gives its
    step and latest losses, and a finished run's line its final ones. A failed run does not stop the others; its
    status is "failed"."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"run names must be unique, repeated: {', '.join(duplicates)}")
    steps = {s.name: resolve(s, config_path).train.steps for s in specs}
    results: dict[str, RunResult] = {}
    pending = []
    for spec in specs:
        if is_complete(spec.out_dir, steps[spec.name]):
            log(f"[skip] {spec.name}: complete ({steps[spec.name]} steps) in {spec.out_dir}")
            results[spec.name] = RunResult(spec.name, "complete")
        else:
            pending.append(spec)
    if dry_run:
        for spec in pending:
            log("[dry-run] " + " ".join(command(spec, config_path, nproc)))
        return [results.get(s.name, RunResult(s.name, "pending")) for s in specs]

    env = child_env(jobs)
    last_report = time.perf_counter()
    running: list[tuple[RunSpec, subprocess.Popen, float, object]] = []
    while pending or running:
        while pending and len(running) < jobs:
            spec = pending.pop(0)
            spec.out_dir.mkdir(parents=True, exist_ok=True)
            logfile = open(spec.out_dir / "launch.log", "a")
            log(f"[run] {spec.name} -> {spec.out_dir} (live log: {spec.out_dir / 'launch.log'})")
            proc = subprocess.Popen(command(spec, config_path, nproc), cwd=REPO_ROOT, env=env,
                                    stdout=logfile, stderr=subprocess.STDOUT)
            running.append((spec, proc, time.perf_counter(), logfile))
        time.sleep(0.2)
        for item in list(running):
            spec, proc, started, logfile = item
            if proc.poll() is None:
                continue
            running.remove(item)
            logfile.close()
            seconds = time.perf_counter() - started
            if proc.returncode != 0:
                status = "failed"
            else:  # a clean exit before the last step is train.stop_after_step: resumed by the next invocation
                status = "ok" if is_complete(spec.out_dir, steps[spec.name]) else "stopped"
            results[spec.name] = RunResult(spec.name, status, proc.returncode, seconds)
            log(f"[{status}] {spec.name} in {seconds:.0f}s (exit {proc.returncode}): "
                f"{progress(spec.out_dir, steps[spec.name])}"
                + (f"; see {spec.out_dir / 'launch.log'}" if status == "failed" else ""))
        if running and time.perf_counter() - last_report >= progress_every_s:
            last_report = time.perf_counter()
            for spec, *_ in running:
                log(f"[..] {spec.name}: {progress(spec.out_dir, steps[spec.name])}")
    return [results[s.name] for s in specs]
