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


def utility_uplift(points: list[dict], path: str | Path, goal: dict | None = None, title: str = "") -> Path:
    """Utility (x) against uplift (y), one dot per point {"label", "x", "y", "lo", "hi" (a seed range, or None),
    "base", "pareto", "goal", "y_goal" (the uplift the goal reads, when it is not y; optional)}: seed ranges as error
    bars, the Pareto points joined by a line, the base marked, the y = 0 "no lead" line, and goal = {"x_min",
    "y_max"} shaded (x >= x_min, y <= y_max). Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.8))
    for p in points:
        if p.get("lo") is not None and p.get("hi") is not None:
            mid, half = (p["lo"] + p["hi"]) / 2, (p["hi"] - p["lo"]) / 2
            ax.errorbar([p["x"]], [mid], yerr=[half], fmt="none", ecolor="0.6", capsize=3, lw=1)
    rest = [p for p in points if not p.get("base")]
    ax.scatter([p["x"] for p in rest], [p["y"] for p in rest], c="C0", s=22, zorder=3, label="locks")
    front = sorted((p for p in points if p.get("pareto")), key=lambda p: p["x"])
    if front:
        ax.plot(
            [p["x"] for p in front],
            [p["y"] for p in front],
            "o-",
            color="C3",
            mfc="none",
            ms=9,
            lw=1.4,
            label="Pareto front",
        )
    checked = [p for p in points if p.get("y_goal") is not None and p["y_goal"] != p["y"]]
    for i, p in enumerate(checked):
        ax.plot([p["x"]] * 2, [p["y"], p["y_goal"]], ":", color="C2", lw=0.8)
        ax.plot([p["x"]], [p["y_goal"]], "D", ms=4, mfc="none", color="C2", label=None if i else "on the goal's tasks")
    for p in points:
        if p.get("base"):
            ax.plot([p["x"]], [p["y"]], "s", ms=9, color="k", zorder=4, label="base (no lock)")
        if p.get("goal"):
            starred = p is next(q for q in points if q.get("goal"))
            y = p["y"] if p.get("y_goal") is None else p["y_goal"]
            ax.plot([p["x"]], [y], "*", ms=14, color="C2", zorder=5, label="reaches the goal" if starred else None)
        label = p["label"] if len(p["label"]) <= 28 else p["label"][:27] + "…"
        ax.annotate(label, (p["x"], p["y"]), fontsize=6, xytext=(4, 3), textcoords="offset points")
    ax.axhline(0.0, color="k", lw=0.8, ls=":", label="no lead over the reference")
    xs = [p["x"] for p in points] + ([goal["x_min"]] if goal else []) or [0.0]
    ys = [v for p in points for v in (p["y"], p.get("lo"), p.get("hi"), p.get("y_goal")) if v is not None] + [0.0]
    ys += [goal["y_max"]] if goal else []
    dx, dy = max(max(xs) - min(xs), 1.0) * 0.08, max(max(ys) - min(ys), 1.0) * 0.08
    x0, x1, y0, y1 = min(xs) - dx, max(xs) + dx, min(ys) - dy, max(ys) + dy
    if goal:
        ax.fill_between([goal["x_min"], x1], y0, goal["y_max"], color="C2", alpha=0.15, lw=0, label="goal")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("authorized utility (test accuracy, %; higher is better)")
    ax.set_ylabel("worst-case uplift over the best reference (points; lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    if title:
        ax.set_title(title, fontsize=8)
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
