"""The driver of ``python -m benchmarks.gpu``: stages in order under one deadline, a JSON per stage, summary.md."""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.gpu.stages import STAGE_NAMES, STAGES, Context, Stage, load_output

REPO_ROOT = Path(__file__).resolve().parents[2]
RESULTS = REPO_ROOT / "benchmarks" / "results"
RESERVE_S = 5.0  # kept back for writing the summary
TAIL_CHARS = 4000


def slug(text: str) -> str:
    """A device name as a folder name (kernels.bench's rule; that module is not imported here: in a process that
    also holds Hugging Face's `kernels`, the name is theirs, optim/kernel_api.py)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__)
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="wall-clock budget for all stages (default 480: one 10-minute call with room to spare)")
    p.add_argument("--dry-run", action="store_true", help="every stage at toy sizes on the CPU (CI)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results/gpu-<device>-"
                                                          "<date>/; a dry run: a new temporary folder)")
    p.add_argument("--only", nargs="+", choices=STAGE_NAMES, default=None, help="run these stages only")
    p.add_argument("--skip", nargs="+", choices=STAGE_NAMES, default=[], help="leave these stages out")
    return p.parse_args(argv)


def environment() -> dict:
    import torch
    cuda = torch.cuda.is_available()
    try:
        revision = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                  check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        revision = None
    return {"device": torch.cuda.get_device_name() if cuda else f"cpu ({platform.machine()}, {os.cpu_count()} cores)",
            "cuda": cuda, "torch": torch.__version__, "python": sys.version.split()[0], "git_revision": revision,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def run_stage(stage: Stage, ctx: Context, deadline: float) -> dict:
    record = {"stage": stage.name, "title": stage.title, "status": None, "reason": None, "wall_s": 0.0,
              "command": None, "returncode": None, "output_tail": None, "result": None}
    command = stage.command(ctx)
    if isinstance(command, str):
        return {**record, "status": "not available", "reason": command}
    record["command"] = " ".join(command)
    left = deadline - time.monotonic() - RESERVE_S
    needed = 2.0 if ctx.dry_run else stage.min_s
    if left < needed:
        return {**record, "status": "skipped", "reason": f"budget: {max(left, 0):.0f} s left, the stage needs "
                                                         f"at least {needed:.0f} s"}
    print(f"[benchmarks.gpu] {stage.name}: {record['command']}  (up to {left:.0f} s)", flush=True)
    start = time.monotonic()
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # its own process group: a timeout stops its children too
    try:
        output, _ = proc.communicate(timeout=left)
        status = "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        status, record["reason"] = "timeout", f"stopped when the budget ran out after {left:.0f} s"
    record.update(status=status, returncode=proc.returncode, wall_s=round(time.monotonic() - start, 1),
                  output_tail=(output or "")[-TAIL_CHARS:])
    try:
        record["result"] = load_output(stage, ctx)
    except (OSError, ValueError) as err:  # a half-written file of a stopped stage
        record["reason"] = (record["reason"] or "") + f" (result unreadable: {err})"
    if status == "ok" and record["result"] is None:
        record.update(status="failed", reason=f"the command left no {stage.output}")
    return record


def summary(env: dict, args, records: list[dict], out_dir: Path) -> str:
    lines = [f"# GPU benchmark run: {env['device']}", "",
             f"`python -m benchmarks.gpu --budget-s {args.budget_s:g}{' --dry-run' if args.dry_run else ''}` at "
             f"{env['started']}, git {env['git_revision']}, torch {env['torch']}, Python {env['python']}.",
             "" if not args.dry_run else "Dry run: toy sizes on the CPU; the times say nothing about a GPU.", "",
             "| stage | status | wall s | note |", "|---|---|---|---|"]
    for r in records:
        lines.append(f"| {r['stage']} | {r['status']} | {r['wall_s']:.0f} | {r['reason'] or ''} |")
    for r in records:
        lines += ["", f"## {r['stage']}: {r['title']}", "", f"status: {r['status']}"
                  + (f" ({r['reason']})" if r["reason"] else "")]
        if r["command"]:
            lines.append(f"command: `{r['command']}`")
        if r["result"] is not None:
            stage = next(s for s in STAGES if s.name == r["stage"])
            try:
                lines += [""] + stage.summarize(r["result"])
            except (KeyError, TypeError, ValueError) as err:
                lines.append(f"(summary failed: {type(err).__name__}: {err}; see {r['stage']}.json)")
        elif r["status"] in ("failed", "timeout"):
            lines += ["", "```", (r["output_tail"] or "")[-1500:], "```"]
    lines += ["", f"Files: {out_dir}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    deadline = time.monotonic() + args.budget_s
    env = environment()
    if not env["cuda"] and not args.dry_run:
        print("benchmarks.gpu: no CUDA device here; run it on a GPU machine, or use --dry-run for the CPU smoke run",
              file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d-%H%M")
    if args.out is not None:
        out_dir = args.out
    elif args.dry_run:
        out_dir = Path(tempfile.mkdtemp(prefix="gpu-dry-run-"))
    else:
        out_dir = RESULTS / f"gpu-{slug(env['device'])}-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(out_dir=out_dir, dry_run=args.dry_run, cuda=env["cuda"])
    chosen = [s for s in STAGES if (args.only is None or s.name in args.only) and s.name not in args.skip]
    records = []
    for stage in chosen:
        record = run_stage(stage, ctx, deadline)
        records.append(record)
        (out_dir / f"{stage.name}.json").write_text(json.dumps({"environment": env, **record}, indent=2) + "\n")
        print(f"[benchmarks.gpu] {stage.name}: {record['status']} {record['reason'] or ''}", flush=True)
    text = summary(env, args, records, out_dir)
    (out_dir / "summary.md").write_text(text)
    print(text)
    return 1 if any(r["status"] == "failed" for r in records) else 0
