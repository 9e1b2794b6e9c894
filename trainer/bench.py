"""Training throughput benchmark: tokens/s and MFU of ``train_gpt.py`` itself, per optimizer.

    python -m trainer.bench                                   # GPU: GPT-2 124M shapes, bf16 + compile, 300 steps
    python -m trainer.bench --optims adamw,muon,clipped_scion --steps 200
    python -m trainer.bench --config configs/tiny.toml --steps 6 --warmup 2   # CPU smoke run
    python -m trainer.bench --parallel ddp,fsdp,hsdp --nproc 8              # one 8-GPU node, 124M, per layout
    python -m trainer.bench --config configs/tiny.toml --parallel ddp,fsdp,hsdp --nproc 4 --steps 6 --warmup 2
                                                                            # the same on CPU (gloo), toy size

Each optimizer runs the real trainer (a subprocess, fresh out_dir) on the embedded corpus with the
model shapes of ``--config`` and one GPU's micro-batch as the global batch (no accumulation, no
evaluation, no checkpoint until the end). The first ``--warmup`` steps (compilation, allocator
warm-up) are dropped; the table and ``benchmarks/results/train-<device>.json`` report the median
step time, tokens/s, MFU (non-embedding-inclusive 6N + attention FLOPs, see ``model.flops_per_token``),
the median breakdown of a step (taking the batch, forward+backward, optimizer step, the host read; device
time on a GPU, from trainer.passes.StepClock) and the step-time ratio to the first optimizer listed (the AdamW baseline by default).

``--parallel ddp,fsdp,hsdp`` runs every optimizer under each data-parallel layout with ``torchrun --standalone
--nproc_per_node=--nproc`` (one micro-batch per rank: the global batch is micro-batch x ranks; hsdp as
``--shard-degree`` ranks per shard group, default half the ranks, so that there are 2 replicas), and writes
``benchmarks/results/train-parallel-<device>.json``; the ratio column is then each row's tokens/s against the first
layout's with the same optimizer (the target: fsdp and hsdp >= 0.95 of ddp at 124M on GPUs).
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


def run_one(config: str, optim_name: str, steps: int, micro_batch: int | None, extra: list[str],
            nproc: int = 1) -> tuple[list[dict], dict]:
    """One trainer run: one process, or ``nproc`` ranks under torchrun with one micro-batch each."""
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    with tempfile.TemporaryDirectory() as out:
        args = [*launcher, str(REPO_ROOT / "train_gpt.py"), "--config", config,
                f"--optim.name={optim_name}",
                "--data.dir=embedded", f"--train.steps={steps}", f"--train.out_dir={out}",
                "--train.warmup_steps=0", "--train.warmdown_frac=0", "--train.warmdown_steps=none",
                "--train.eval_every=0", "--train.checkpoint_every=0", "--train.log_every=50", "--train.eval_tokens=32768"]
        if micro_batch:
            args += [f"--train.micro_batch_size={micro_batch}", f"--train.batch_size={micro_batch * nproc}"]
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


def parallel_runs(args, extra: list[str]) -> tuple[list[dict], dict]:
    """Every optimizer under every layout of ``args.parallel``; rows carry ``parallel`` and the ratio of their
    tokens/s to the first layout's with the same optimizer."""
    micro = args.micro_batch or _config_micro_batch(args.config, extra)
    shard = args.shard_degree or max(1, args.nproc // 2)
    rows, info = [], None
    for name in args.optims.split(","):
        for mode in args.parallel.split(","):
            layout = [f"--train.parallel={mode}"] + ([f"--train.shard_degree={shard}"] if mode == "hsdp" else [])
            records, info = run_one(args.config, name, args.steps, micro, extra + layout, args.nproc)
            rows.append({"optim": name, "parallel": mode, "nproc": args.nproc,
                         **({"shard_degree": shard} if mode == "hsdp" else {}), **summarize(records, args.warmup)})
    for row in rows:
        base = next(r for r in rows if r["optim"] == row["optim"])
        row["tokens_per_s_vs_first_layout"] = row["tokens_per_s"] / base["tokens_per_s"]
    print(f"{'optimizer':<28} {'layout':<6} {'step ms':>9} {'tokens/s':>12} {'vs ' + rows[0]['parallel']:>8}")
    for row in rows:
        print(f"{row['optim']:<28} {row['parallel']:<6} {row['median_step_time_s'] * 1e3:>9.1f} "
              f"{row['tokens_per_s']:>12,.0f} {row['tokens_per_s_vs_first_layout']:>7.3f}x")
    return rows, info


def _config_micro_batch(config: str, extra: list[str]) -> int:
    from configs.schema import load_config

    return load_config(["--config", config, *extra]).train.micro_batch_size


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/gpt2-124m.toml")
    parser.add_argument("--optims", default="adamw", help="comma-separated optim.name values; the first is the "
                                                          "baseline of the ratio column")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30, help="leading steps left out of the timing")
    parser.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default: the "
                                                                      "config's train.micro_batch_size)")
    parser.add_argument("--parallel", default=None, help="comma-separated train.parallel layouts (ddp, fsdp, "
                                                         "hsdp) to compare under torchrun; the first is the "
                                                         "baseline of the ratio column")
    parser.add_argument("--nproc", type=int, default=None, help="ranks per layout with --parallel (default: the "
                                                                "GPUs of this machine, 2 on CPU)")
    parser.add_argument("--shard-degree", type=int, default=None, help="hsdp's train.shard_degree (default: "
                                                                       "half of --nproc)")
    parser.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train-<device>.json, "
                                                    "train-parallel-<device>.json with --parallel)")
    args, extra = parser.parse_known_args(argv)

    if args.parallel:
        if args.nproc is None:
            import torch

            args.nproc = torch.cuda.device_count() or 2
        rows, info = parallel_runs(args, extra)
    else:
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
    kind = "train-parallel" if args.parallel else "train"
    out = Path(args.out) if args.out else REPO_ROOT / "benchmarks" / "results" / f"{kind}-{device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "steps": args.steps, "warmup_steps": args.warmup,
                               "overrides": extra, "run_info": info, "results": rows}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
