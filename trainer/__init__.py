"""The training run's machinery: process group, LR schedule, checkpoints, metrics, the step and eval loops.

``train_gpt.py`` wires these together with ``model``, ``optim`` and ``data``.
"""
