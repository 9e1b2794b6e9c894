"""lm-evaluation-harness (EleutherAI's lm-eval 0.4; optional extra `pip install -e ".[eval]"`) on a run's checkpoint.

    python -m evals.lm_eval --run out/tiny --tasks hellaswag_small --include-path evals/lm_eval_tasks
    python -m evals.lm_eval --run out/gpt2-124m --tasks hellaswag,arc_easy --batch-size 16     # hub data, online
    torchrun --nproc_per_node=8 -m evals.lm_eval --run-dir out/gpt2-124m --tasks hellaswag,arc_easy

(Under torchrun write `--run-dir`: torchrun's own parser reads `--run` as an abbreviation of its `--run-path`.)

Our model answers lm-eval's requests through `evals.lm_eval_model.GPTLM` (loglikelihood, loglikelihood_rolling,
generate_until with the KV cache); lm-eval's `simple_evaluate` builds the requests from its task configs, runs them
and computes the metrics, so the numbers are lm-eval's own (e.g. its acc_norm divides a choice's log-likelihood by
its length in characters, acc_bytes by its UTF-8 bytes). Any architecture our GPT supports works; under torchrun
the ranks share the requests (lm-eval splits them), each rank holding the whole model.

`--include-path` adds a folder of task YAMLs (lm-eval's include path), e.g. evals/lm_eval_tasks/ with a small
offline HellaSwag. Prints lm-eval's table, writes `<run>/evals/lm_eval_step_<step>.json` (the metrics, the
checkpoint, the tasks and lm-eval's version) and ends stdout with one JSON line {task: {metric: value}}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from configs.base import ConfigError
from configs.cli import HelpFormatter
from evals.checkpoint_model import add_checkpoint_arguments


def require_lm_eval():
    """lm_eval, or a ConfigError saying how to install it (only a missing package; other import errors surface)."""
    from optim.kernel_api import claim_kernels_name_for_installed_package

    claim_kernels_name_for_installed_package()  # run from the repo root, our kernels/ would shadow transformers' kernels
    try:
        import lm_eval
    except ModuleNotFoundError as err:
        if err.name and err.name.split(".")[0] == "lm_eval":
            raise ConfigError("python -m evals.lm_eval needs lm-evaluation-harness: pip install -e '.[eval]' "
                              "(or pip install lm-eval)") from None
        raise
    return lm_eval


def metrics_of(results: dict) -> dict[str, dict[str, float]]:
    """lm-eval's results table -> {task: {metric: value}} (numbers only; the `none` filter's suffix dropped)."""
    out = {}
    for task, values in results.get("results", {}).items():
        row = {}
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("sample_len",
                                                                                                  "sample_count"):
                metric, _, filt = key.partition(",")
                row[metric if filt in ("", "none") else key] = value
        out[task] = row
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    add_checkpoint_arguments(parser, "evaluated")
    parser.add_argument("--tasks", required=True, help="comma-separated lm-eval task (or group) names")
    parser.add_argument("--include-path", help="folder of extra task YAMLs (lm-eval's include path)")
    parser.add_argument("--limit", type=float, help="examples per task (an int), or a fraction of each task if < 1")
    parser.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward of the loglikelihood "
                                                                  "requests")
    parser.add_argument("--max-gen-toks", type=int, default=256, help="most new tokens of a generate_until request "
                                                                      "unless its task says")
    parser.add_argument("--bootstrap-iters", type=int, default=100000, help="bootstrap resamples for the stderr "
                                                                            "of non-mean metrics (0: none)")
    parser.add_argument("--seed", type=int, default=1234, help="seed of the few-shot sampling and any sampling")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto: CUDA when available (under torchrun: the rank's local GPU)")
    parser.add_argument("--out", help="result file (default: <run>/evals/lm_eval_step_<step>.json)")
    args = parser.parse_args(argv)
    args.tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.tasks:
        parser.error("--tasks names no task")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.limit is not None and (args.limit <= 0 or (args.limit >= 1 and args.limit != int(args.limit))):
        parser.error(f"--limit must be a positive integer or a fraction in (0, 1), got {args.limit:g}")
    if args.include_path and not Path(args.include_path).is_dir():
        parser.error(f"--include-path {args.include_path}: no such directory")
    return args


def task_manager(lm_eval, include_path: str | None, tasks: list[str]):
    """lm-eval's TaskManager with the include path; an unknown task name is a ConfigError naming it. When every
    task is in the include path, lm-eval's own ~15k task configs are not indexed (that takes a minute or more)."""
    from lm_eval.tasks import TaskManager

    if include_path:
        own = TaskManager(include_path=include_path, include_defaults=False)
        if all(t in own.all_tasks for t in tasks):
            return own
    manager = TaskManager(include_path=include_path)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        where = f" (nor in --include-path {include_path})" if include_path else ""
        raise ConfigError(f"--tasks: unknown lm-eval task(s) {', '.join(unknown)}{where}; `lm-eval ls tasks` lists "
                          f"them")
    return manager


def main(argv: list[str] | None = None) -> int:
    from evals.checkpoint_model import autocast, load_model
    from trainer.distributed import init_distributed, shutdown

    args = parse_args(argv)
    try:
        lm_eval = require_lm_eval()
        manager = task_manager(lm_eval, args.include_path, args.tasks)
        loaded = load_model(args.run, args.checkpoint, device="cpu", allow_unverified=args.allow_unverified)
    except (ConfigError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from lm_eval import simple_evaluate
    from lm_eval.utils import make_table

    from evals.lm_eval_model import GPTLM

    dist = init_distributed(args.device)
    clean = False
    try:
        model = loaded.model.to(dist.device)
        if dist.is_main:
            print(f"{loaded.path} (step {loaded.step}): lm-eval {getattr(lm_eval, '__version__', '?')}, tasks "
                  f"{','.join(args.tasks)} on {dist.world_size} rank(s)", file=sys.stderr)
        lm = GPTLM(model, batch_size=args.batch_size, max_gen_toks=args.max_gen_toks, autocast=autocast(dist.device),
                   rank=dist.rank, world_size=dist.world_size)
        limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
        results = simple_evaluate(model=lm, tasks=args.tasks, num_fewshot=args.num_fewshot, limit=limit,
                                  task_manager=manager, log_samples=False, bootstrap_iters=args.bootstrap_iters,
                                  random_seed=args.seed, numpy_random_seed=args.seed, torch_random_seed=args.seed,
                                  fewshot_random_seed=args.seed)
        if dist.is_main:
            print(make_table(results))
            metrics = metrics_of(results)
            run_dir = Path(args.run) if args.run else loaded.path.parent.parent
            out = Path(args.out) if args.out else run_dir / "evals" / f"lm_eval_step_{loaded.step:07d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            record = {"metrics": metrics, "step": loaded.step, "checkpoint": str(loaded.path), "tasks": args.tasks,
                      "limit": args.limit, "num_fewshot": args.num_fewshot, "world_size": dist.world_size,
                      "n_samples": results.get("n-samples"), "versions": results.get("versions"),
                      "lm_eval_version": getattr(lm_eval, "__version__", None)}
            out.write_text(json.dumps(record, indent=2, default=str) + "\n")
            print(f"wrote {out}", file=sys.stderr)
            print(json.dumps(metrics), flush=True)
        clean = True
    finally:
        shutdown(clean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
