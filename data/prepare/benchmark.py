"""Tokenization throughput of the preparation pipeline: ``python -m data.prepare.benchmark``.

Builds a local parquet source from the embedded corpus (repeated to ``--tokens``), then measures
in tokens/s, best of ``--repeats``:

* ``read``: the main process reading text batches through ``datasets`` alone (an upper bound
  on the pipeline, since the main process reads while the workers tokenize);
* ``tokenize``: tokenized batches from in-memory texts, in the main process (workers 0) and in
  1 and 2 worker processes;
* ``pipeline``: the whole ``prepare`` run (read, tokenize, write shards) with 1 and 2 workers.

Writes a JSON file to ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

from configs.cli import add_results_arguments, refuse_existing_out, results_path, written_note
from data.corpus import CORPUS_PATH

from .pipeline import PrepareConfig, prepare
from .sources import SourceSpec, open_text_batches
from .tokenize import tokenize_batches

RESULTS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "results"


def build_source(directory: Path, target_tokens: int) -> tuple[Path, list[str], int]:
    """A parquet file of the embedded corpus repeated to about ``target_tokens`` tokens."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    corpus = [json.loads(line)["text"] for line in CORPUS_PATH.read_text(encoding="utf-8").splitlines()]
    corpus_tokens = sum(len(b.tokens) for b in tokenize_batches([corpus], workers=0))
    repeats = max(1, round(target_tokens / corpus_tokens))
    texts = corpus * repeats
    path = directory / "bench.parquet"
    pq.write_table(pa.table({"text": texts}), path, row_group_size=1000)
    return path, texts, corpus_tokens * repeats


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def worker_startup_cpu_s(repeats: int = 3) -> float:
    """CPU seconds one spawned worker spends starting (imports, loading the ranks), per worker."""
    costs = []
    for _ in range(repeats):
        before = _children_cpu()
        for _ in tokenize_batches(iter([["warm up"], ["warm up"]]), workers=2):
            pass
        costs.append((_children_cpu() - before) / 2)
    return min(costs)


def _steady_rate(tokens: int, children_cpu: float, name: str, startup_cpu_s: float):
    suffix = name.rsplit("_", 1)[-1]
    workers = int(suffix) if suffix.isdigit() else 0
    work = children_cpu - workers * startup_cpu_s
    return tokens / work if workers and work > 0 else None


def measure(tokens: int, runs: dict, repeats: int, startup_cpu_s: float = 0.0) -> dict:
    """Time each named run ``repeats`` times, interleaved so that changes in the load of a shared
    machine hit every configuration alike.

    Reports the best wall-clock rate, and rates per CPU-second of the main process and of the
    worker processes (reaped children), which a busy shared machine does not distort.
    """
    samples = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            wall, main_cpu, child_cpu = time.perf_counter(), time.process_time(), _children_cpu()
            run()
            samples[name].append((time.perf_counter() - wall, time.process_time() - main_cpu,
                                  _children_cpu() - child_cpu))
    report = {}
    for name, values in samples.items():
        best = min(values)
        report[name] = {
            "tokens_per_s": tokens / best[0],
            "main_process_tokens_per_cpu_s": tokens / best[1],
            "workers_tokens_per_cpu_s": tokens / best[2] if best[2] > 0 else None,
            # the same without the workers' start-up, negligible in a long run
            "workers_tokens_per_cpu_s_steady": _steady_rate(tokens, best[2], name, startup_cpu_s),
            "wall_s": [round(v[0], 3) for v in values],
        }
    return report


def worker_rate(result: dict) -> float:
    return result["workers_tokens_per_cpu_s_steady"]


def projection(pipeline: dict, cores: int, tokens: float) -> dict:
    """Tokens/s and hours on a node with ``cores`` free cores: ``cores - 1`` workers at the
    measured per-CPU-second rate of the 2-worker run, capped by the main process's rate."""
    workers = cores - 1
    worker_bound = workers * worker_rate(pipeline[2])
    main_bound = pipeline[2]["main_process_tokens_per_cpu_s"]
    rate = min(worker_bound, main_bound)
    return {
        "cores": cores,
        "workers": workers,
        "tokens": tokens,
        "worker_bound_tokens_per_s": worker_bound,
        "main_process_bound_tokens_per_s": main_bound,
        "tokens_per_s": rate,
        "hours": tokens / rate / 3600,
        "excludes": "download of the source (about 27 GB of parquet for sample-10BT) and hyperthreading effects",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-docs", type=int, default=64)
    parser.add_argument("--node-cores", type=int, default=16, help="cores of the node to project to")
    parser.add_argument("--project-tokens", type=float, default=1e10, help="tokens to project (sample-10BT)")
    add_results_arguments(parser, "benchmarks/results/tokenize-cpu.json")
    args = parser.parse_args()
    refuse_existing_out(args.out, args.overwrite)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        source, texts, n_tokens = build_source(tmp, args.tokens)
        batches = [texts[i : i + args.batch_docs] for i in range(0, len(texts), args.batch_docs)]
        spec = SourceSpec(source=str(source))
        outputs = iter(range(10**6))

        def read_all():
            for _ in open_text_batches(spec, args.batch_docs):
                pass

        def tokenize_all(workers):
            for _ in tokenize_batches(iter(batches), workers):
                pass

        def pipeline_run(workers):
            config = PrepareConfig(source=spec, out_dir=tmp / f"out{next(outputs)}", workers=workers,
                                   batch_documents=args.batch_docs, progress=False,
                                   shard_tokens=10**7, val_tokens=10**6)
            prepare(config)

        read_all()  # import datasets and warm the file cache outside the timings
        runs = {"read": read_all}
        for workers in (0, 1, 2):
            runs[f"tokenize_workers_{workers}"] = functools.partial(tokenize_all, workers)
        for workers in (1, 2):
            runs[f"pipeline_workers_{workers}"] = functools.partial(pipeline_run, workers)
        load_before = os.getloadavg()
        startup = worker_startup_cpu_s()
        results = measure(n_tokens, runs, args.repeats, startup)

    tokenize = {w: results[f"tokenize_workers_{w}"] for w in (0, 1, 2)}
    pipeline = {w: results[f"pipeline_workers_{w}"] for w in (1, 2)}
    report = {
        "what": "GPT-2 tokenization throughput of data.prepare (tokens/s, best of repeats)",
        "device": f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores",
        "note": "machine shared with other busy processes while measuring; scaling is a lower bound",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "tokens": n_tokens,
        "documents": len(texts),
        "batch_documents": args.batch_docs,
        "worker_startup_cpu_s": startup,
        "results": results,
        "scaling_tokenize_2_over_1_wall": tokenize[2]["tokens_per_s"] / tokenize[1]["tokens_per_s"],
        "scaling_pipeline_2_over_1_wall": pipeline[2]["tokens_per_s"] / pipeline[1]["tokens_per_s"],
        # With a free core per worker, wall-clock scaling is the ratio of the steady per-CPU-second
        # rates times the number of workers.
        "scaling_pipeline_2_over_1_cpu_bound": 2 * worker_rate(pipeline[2]) / worker_rate(pipeline[1]),
        "projection_fineweb_sample_10bt": projection(pipeline, args.node_cores, args.project_tokens),
    }
    default = RESULTS_DIR / "tokenize-cpu.json"
    out = results_path(args.out, default, args.overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(written_note(out, default))


if __name__ == "__main__":
    main()
