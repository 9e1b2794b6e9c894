"""Benchmark drivers that span packages (``python -m benchmarks.gpu``); results live under benchmarks/results/."""
