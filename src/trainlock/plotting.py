"""Plots people would rather look at than read. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

import statistics
from pathlib import Path

from .atomic import writing_file


def accuracy_curves(panels: dict[str, list[dict]], path: str | Path, title: str = "") -> Path:
    """One panel per task; each run is {"label", "evals": [(step, acc)], "style", "color"}. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(5.2 * n, 3.8), squeeze=False)
    for ax, (task, runs) in zip(axes[0], panels.items(), strict=False):
        for run in runs:
            steps, accs = zip(*run["evals"], strict=False) if run["evals"] else ((), ())
            ax.plot(steps, accs, run.get("style", "-"), color=run.get("color"), label=run["label"], lw=1.6)
        if runs and runs[0].get("chance") is not None:
            ax.axhline(runs[0]["chance"], color="grey", lw=0.8, ls=":", label="chance")
        ax.set_title(task)
        ax.set_xlabel("fine-tuning step")
        ax.set_ylabel("test accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _band(curves: list[list[float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """(runs 1..n, median, min, max) over curves of best-so-far accuracy; a shorter curve keeps its last value."""
    n = max(len(c) for c in curves)
    padded = [c + [c[-1]] * (n - len(c)) for c in curves if c]
    cols = list(zip(*padded, strict=True))
    return list(range(1, n + 1)), [statistics.median(c) for c in cols], [min(c) for c in cols], [max(c) for c in cols]


def trials_to_break(panels: dict[str, dict], path: str | Path, title: str = "") -> Path:
    """Best accuracy so far versus runs spent, one panel per step budget: each panel is {"locked": [curve per
    seed], "base": [curve per seed] (or empty), "reference": [best reference accuracy per seed]}. One seed: its
    lines; several: the median with a min / max band. The best reference is a horizontal line. Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    n = max(1, len(panels))
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n, 3.2), squeeze=False, sharey=True)
    for ax, (label, panel) in zip(axes[0], panels.items(), strict=False):
        for key, color, style in (("base", "grey", "x--"), ("locked", "C3", "o-")):
            curves = [c for c in panel.get(key) or [] if c]
            if not curves:
                continue
            x, med, lo, hi = _band(curves)
            many = len(curves) > 1
            ax.plot(x, med, style, color=color, ms=3, label=f"{key} (median of {len(curves)} seeds)" if many else key)
            if many:
                ax.fill_between(x, lo, hi, color=color, alpha=0.2, lw=0)
        refs = [r for r in panel.get("reference") or [] if r is not None]
        if refs:
            many = len(refs) > 1
            ax.axhline(statistics.median(refs), color="C0", ls=":", label="best reference" + " (median)" * many)
            if len(refs) > 1:
                ax.axhspan(min(refs), max(refs), color="C0", alpha=0.1, lw=0)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("attack runs spent (suite order)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel("best accuracy so far")
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    """Write `fig` to `path` as a PNG (atomically: complete or absent), close it, return the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
