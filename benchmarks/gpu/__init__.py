"""One command for a GPU day: ``python -m benchmarks.gpu --budget-s 480``.

On one H100/H200 it runs, in order and within the time budget, the CUDA-only tests (the kernels against their torch
references at real sizes included), the optimizer-step benchmark (anchor set, whole delta-GClip step against torch,
each optimizer's step replayed from a CUDA graph beside the eager one), the kernel microbenchmark, and training
throughput at GPT-2 124M per optimizer (plus the captured step, and the norm-in-backward step once it exists). Each
stage is a subprocess with a deadline: one that does not fit the time left is skipped, one that runs out is stopped,
and ``summary.md`` says which ran. Results: ``benchmarks/results/gpu-<device>-<date>/`` (a JSON per stage and the
summary), or ``--out``. ``--dry-run`` runs every stage at toy sizes on the CPU (CI does, so the command cannot rot
before its first GPU). See docs/kernels.md.
"""
