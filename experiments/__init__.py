"""Optimizer comparisons: launch runs side by side, sweep hyperparameters, and report on them.

    python -m experiments.compare --config configs/tiny.toml --optims adamw,dgclip --set dgclip:optim.lr=0.5
    python -m experiments.sweep --config configs/tiny.toml --optims clipped_scion optim.rho=150,600,2400
    python -m experiments.report runs/cmp/* --out runs/cmp/report

Modules: ``launch`` (one trainer run per spec, resumable), ``runfiles`` (read a run directory),
``stats`` (smoothing, steps to a target, the summary table), ``grouping`` (seeds and swept keys),
``plots`` (PNG figures), ``report`` / ``compare`` / ``sweep`` (the command lines).
"""
