"""Training throughput benchmark: tokens/s and MFU of ``train_gpt.py`` itself, per optimizer.

    python -m trainer.bench                                   # GPU: GPT-2 124M shapes, bf16 + compile, 300 steps
    python -m trainer.bench --optims adamw,muon,clipped_scion --steps 200
    python -m trainer.bench --config configs/tiny.toml --steps 6 --warmup 2   # CPU smoke run

Each optimizer runs the real trainer (a subprocess, fresh out_dir) on the embedded corpus with the
model shapes of ``--config`` and one GPU's micro-batch as the global batch (no accumulation, no
evaluation, no checkpoint until the end). The first ``--warmup`` steps (compilation, allocator
warm-up) are dropped; the table and ``benchmarks/results/train-<device>.json`` report the median
step time, tokens/s, MFU (non-embedding-inclusive 6N + attention FLOPs, see ``model.flops_per_token``),
the median breakdown of a step (taking the batch, forward+backward, optimizer step, the host read; device
time on a GPU, from trainer.passes.StepClock) and the step-time ratio to the first optimizer listed (the AdamW baseline by default).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from configs.cli import add_results_arguments, refuse_existing_out, results_path, written_note

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_one(config: str, optim_name: str, steps: int, micro_batch: int | None,
            extra: list[str]) -> tuple[list[dict], dict]:
    with tempfile.TemporaryDirectory() as out:
        args = [sys.executable, str(REPO_ROOT / "train_gpt.py"), "--config", config, f"--optim.name={optim_name}",
                "--data.dir=embedded", f"--train.steps={steps}", f"--train.out_dir={out}",
                "--train.warmup_steps=0", "--train.warmdown_frac=0", "--train.warmdown_steps=none",
                "--train.eval_every=0", "--train.checkpoint_every=0", "--train.log_every=50", "--train.eval_tokens=32768"]
        if micro_batch:
            args += [f"--train.micro_batch_size={micro_batch}", f"--train.batch_size={micro_batch}"]
        proc = subprocess.run(args + extra, cwd=REPO_ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{optim_name}: trainer failed\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
        lines = (Path(out) / "metrics.jsonl").read_text().splitlines()
        info = json.loads((Path(out) / "run_info.json").read_text())
    return [json.loads(line) for line in lines], info


def summarize(records: list[dict], warmup: int) -> dict:
    timed = [r for r in records if r["step"] > warmup] or records
    step_time = statistics.median(r["step_time_s"] for r in timed)
    tokens = records[0]["tokens"]  # tokens of one step (the first record is step 1)
    mfus = [r["mfu"] for r in timed if r.get("mfu") is not None]
    breakdown = {part: statistics.median(r[f"time_{part}_s"] for r in timed) * 1e3
                 for part in ("data", "fwd_bwd", "optimizer", "host_read") if f"time_{part}_s" in timed[0]}
    return {"steps_timed": len(timed), "median_step_time_s": step_time, "tokens_per_step": tokens,
            "tokens_per_s": tokens / step_time, "mfu": statistics.median(mfus) if mfus else None,
            "breakdown_ms": breakdown, "final_train_loss": records[-1]["train_loss"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/gpt2-124m.toml")
    parser.add_argument("--optims", default="adamw", help="comma-separated optim.name values; the first is the "
                                                          "baseline of the ratio column")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30, help="leading steps left out of the timing")
    parser.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default: the "
                                                                      "config's train.micro_batch_size)")
    add_results_arguments(parser, "benchmarks/results/train-<device>.json")
    args, extra = parser.parse_known_args(argv)
    refuse_existing_out(args.out, args.overwrite)

    rows, info = [], None
    for name in args.optims.split(","):
        records, info = run_one(args.config, name, args.steps, args.micro_batch, extra)
        rows.append({"optim": name, **summarize(records, args.warmup)})
    base = rows[0]["median_step_time_s"]
    for row in rows:
        row["step_time_vs_baseline"] = row["median_step_time_s"] / base

    print(f"{'optimizer':<28} {'step ms':>9} {'tokens/s':>12} {'MFU':>7} {'vs ' + rows[0]['optim']:>10}")
    for row in rows:
        mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
        print(f"{row['optim']:<28} {row['median_step_time_s'] * 1e3:>9.1f} {row['tokens_per_s']:>12,.0f} "
              f"{mfu:>7} {row['step_time_vs_baseline']:>9.3f}x")

    device = re.sub(r"[^a-z0-9]+", "-", info["device_name"].lower()).strip("-")
    default = REPO_ROOT / "benchmarks" / "results" / f"train-{device}.json"
    out = results_path(args.out, default, args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "steps": args.steps, "warmup_steps": args.warmup,
                               "overrides": extra, "run_info": info, "results": rows}, indent=2) + "\n")
    print(written_note(out, default))
    return 0


if __name__ == "__main__":
    sys.exit(main())
