"""Plots people would rather look at than read. matplotlib with the Agg backend (no display)."""

from __future__ import annotations

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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path
