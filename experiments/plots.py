"""PNG figures of a report (matplotlib, Agg backend): loss curves, grad norm / clip factor, the sweep curve.

One colour per setting (a group of seeds); the smoothed train loss is drawn bold over the raw curve drawn faint.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.ticker import NullFormatter, ScalarFormatter  # noqa: E402

from .grouping import Group, SweepAxis  # noqa: E402
from .stats import ema, mean_std  # noqa: E402

X_AXES = {"step": "optimizer step", "tokens": "training tokens", "elapsed_s": "wall time (s)"}


def _save(fig, path: Path) -> Path:
    """Write `fig` as a 256-colour palette PNG (a third of the size of the RGBA one, for committed reports)."""
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=100, format="png")
    plt.close(fig)
    buffer.seek(0)
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    return path


def _colors(groups: Sequence[Group]) -> dict[str, str]:
    cmap = plt.get_cmap("tab10" if len(groups) <= 10 else "tab20")
    return {g.label: cmap(i % cmap.N) for i, g in enumerate(groups)}


def _loss_ylim(curves: list[list[float]]) -> Optional[tuple[float, float]]:
    """Leave out the first 10% of each curve (the fall from ln(vocab)), so the differences late in training show;
    the raw train-loss curves are among ``curves``, so their noise stays inside the frame."""
    tails = [v for c in curves for v in c[len(c) // 10:]]
    if not tails:
        return None
    low, high = min(tails), max(tails)
    pad = 0.05 * (high - low or 1.0)
    return low - pad, high + pad


def plot_losses(groups: Sequence[Group], x: str, path: Path, beta: float) -> Path:
    """Train loss (smoothed, raw faint) and val loss against `x` ("step", "tokens" or "elapsed_s")."""
    colors = _colors(groups)
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(13, 4.8))
    train_curves, val_curves, lone = [], [], 0
    for group in groups:
        for i, run in enumerate(group.runs):
            label = group.legend if i == 0 else None
            xs, ys = run.series("train_loss", x)
            if xs:
                smooth = ema(ys, beta)
                ax_train.plot(xs, ys, color=colors[group.label], alpha=0.35, linewidth=0.8)
                ax_train.plot(xs, smooth, color=colors[group.label], linewidth=1.8, label=label)
                train_curves += [ys, smooth]
            xs, ys = run.series("val_loss", x)
            if xs:
                ax_val.plot(xs, ys, "o-", color=colors[group.label], markersize=3.5 if len(xs) > 1 else 7,
                            linewidth=1.5, label=label)
                val_curves.append(ys)
                if len(xs) == 1:  # evaluated only at its end: a dot, so its value is written beside it
                    lone += 1
                    ax_val.annotate(f"{ys[0]:.3f}", (xs[0], ys[0]), textcoords="offset points", xytext=(6, 4),
                                    fontsize=8, color=colors[group.label])
    val_title = "validation loss" + ("\n(runs evaluated only at their end are one dot: --train.eval_every=N draws a "
                                     "curve)" if lone else "")
    for ax, title, curves in ((ax_train, f"train loss (EMA {beta:.3g}; raw faint)", train_curves),
                              (ax_val, val_title, val_curves)):
        ax.set_xlabel(X_AXES[x])
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        limits = _loss_ylim(curves)
        if limits:
            ax.set_ylim(*limits)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_grad_norm_and_clip(groups: Sequence[Group], path: Path, beta: float) -> Path:
    """Gradient norm (log scale, smoothed over the raw faint curve) and the optimizers' clip factor against step."""
    colors = _colors(groups)
    has_clip = any(r.has("clip_factor") for g in groups for r in g.runs)
    fig, axes = plt.subplots(1, 2 if has_clip else 1, figsize=(13 if has_clip else 6.5, 4.8), squeeze=False)
    ax_norm = axes[0][0]
    for group in groups:
        for i, run in enumerate(group.runs):
            label = group.legend if i == 0 else None
            xs, ys = run.series("grad_norm")
            positive = [(a, b) for a, b in zip(xs, ys) if b > 0]
            if positive:
                px, py = zip(*positive)
                ax_norm.plot(px, py, color=colors[group.label], alpha=0.25, linewidth=0.8)
                ax_norm.plot(px, ema(py, beta), color=colors[group.label], linewidth=1.8, label=label)
            if has_clip and run.has("clip_factor"):
                xs, ys = run.series("clip_factor")
                axes[0][1].plot(xs, ys, color=colors[group.label], linewidth=1.2, label=label)
    ax_norm.set_yscale("log")
    ax_norm.set_title("global gradient norm (before clipping)")
    ax_norm.set_ylabel("||g||_2")
    if has_clip:
        ax_clip = axes[0][1]
        ax_clip.set_title("clip factor (1 = unclipped; Scion family: min(1, G/rho))")
        ax_clip.set_ylabel("factor applied to the step")
        ax_clip.set_yscale("log")
    for ax in axes[0]:
        ax.set_xlabel(X_AXES["step"])
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_hellaswag(groups: Sequence[Group], path: Path) -> Path:
    """HellaSwag accuracy during training (train.hellaswag_every): acc_norm solid, acc dashed, chance dotted."""
    colors = _colors(groups)
    fig, ax = plt.subplots(figsize=(6.5, 4.8))
    for group in groups:
        for i, run in enumerate(group.runs):
            for key, style in (("hellaswag_acc_norm", "o-"), ("hellaswag_acc", "x--")):
                xs, ys = run.series(key)
                if xs:
                    ax.plot(xs, ys, style, color=colors[group.label], markersize=3.5, linewidth=1.3,
                            label=f"{group.legend} ({key.removeprefix('hellaswag_')})" if i == 0 else None)
    ax.axhline(0.25, color="grey", linestyle=":", linewidth=1, label="chance (4 endings)")
    ax.set_xlabel(X_AXES["step"])
    ax.set_ylabel("accuracy")
    ax.set_title("HellaSwag during training")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(axis: SweepAxis, path: Path) -> Path:
    """Final validation loss against the swept value, one line per optimizer (mean over seeds, std as error bar);
    a setting present at a single value only (an unswept baseline) is drawn as a dashed reference level."""
    fig, ax = plt.subplots(figsize=(7, 4.8))
    categories = sorted({str(x) for points in axis.lines.values() for x, _ in points})
    for index, (label, points) in enumerate(axis.lines.items()):
        xs, means, errs = [], [], []
        for x, group in points:
            finals = [r.series("val_loss")[1][-1] if r.has("val_loss") else None for r in group.runs]
            mean, std = mean_std(finals)
            if mean is None:
                continue
            xs.append(float(x) if axis.numeric else categories.index(str(x)))
            means.append(mean)
            errs.append(std or 0.0)
        if len(points) == 1 and len(axis.lines) > 1 and means:
            # a setting not swept along this axis (e.g. unclipped Scion beside a rho sweep): a reference level
            ax.axhline(means[0], linestyle="--", color=f"C{index % 10}", label=f"{label} (not swept)")
        elif xs:
            ax.errorbar(xs, means, yerr=errs if any(errs) else None, fmt="o-", capsize=3, color=f"C{index % 10}",
                        label=label)
    if axis.numeric:
        values = [float(x) for points in axis.lines.values() if len(points) > 1 or len(axis.lines) == 1
                  for x, _ in points]
        if min(values) > 0 and max(values) / min(values) >= 10:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xticks(sorted(set(values)))
    else:
        ax.set_xticks(range(len(categories)), categories)
    ax.set_xlabel(axis.key)
    ax.set_ylabel("final validation loss")
    ax.set_title(f"sweep over {axis.key}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
