"""Reproduce the SpecDef paper's Figure 1 and Figure 2 (see ``trainlock.theory``) into a directory:
results.json, table.md and PNG plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..atomic import write_text, writing_file
from ..io.tables import markdown_table
from . import theory

FIG1_COLS = [
    "kappa",
    "gd_opt_measured",
    "gd_opt_theory",
    "gd_1L_measured",
    "gd_1L_theory",
    "nesterov_measured",
    "nesterov_theory",
]
FIG2_COLS = [
    "arch",
    "seed",
    "scale",
    "sigma_max_W",
    "iterations",
    "converged",
    "sigma_max_H",
    "bound",
    "ratio",
    "vacuous",
    "k",
    "topk_ratio",
    "restricted_ratio",
    "alignment",
    "factorization_ok",
]
THM22_COLS = [
    "weight",
    "seed",
    "scale",
    "sigma_max_W",
    "iterations",
    "converged",
    "hessian_lambda_max",
    "own_block_sigma",
    "checked",
    "sigma_max_H",
    "ratio",
    "vacuous",
    "topk_ratio",
    "restricted_ratio",
    "alignment",
    "ratio_GN",
]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "inf" if math.isinf(v) else "-" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def _table(rows: list[dict], cols: list[str]) -> str:
    return markdown_table(cols, [[_fmt(r[c]) for c in cols] for r in rows]) + "\n"


def _json_safe(x):
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_json_safe(v) for v in x]
    return x


def _plot_fig1(rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = [r["kappa"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, label, c in [
        ("gd_opt", "GD lr=2/(L+mu)", "C0"),
        ("gd_1L", "GD lr=1/L", "C2"),
        ("nesterov", "Nesterov lr=1/L", "C1"),
    ]:
        ax.loglog(k, [r[f"{key}_measured"] for r in rows], "o-", color=c, label=f"{label} measured")
        ax.loglog(k, [r[f"{key}_theory"] for r in rows], "--", color=c, label=f"{label} theory")
    ax.set_xlabel("kappa = sigma_max(H) / sigma_min(H)  (sigma_min = 1)")
    ax.set_ylabel(f"steps to f <= {rows[0]['tol']:g} f(w0)")
    ax.set_title("Figure 1: convex quadratic")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _seed_panels(rows, group: str, draw, labels: dict, path: Path, width: float) -> None:
    """Two rows of panels, one column per value of ``group``; ``draw(top, bottom, rows_of_one_seed, seed)``
    plots one seed's rows (sorted by scale) into a column. ``labels``: titles and axis labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(r[group] for r in rows))
    fig, axes = plt.subplots(2, len(groups), figsize=(width * len(groups), 6.8), squeeze=False)
    for j, g in enumerate(groups):
        ax, bx = axes[0][j], axes[1][j]
        for seed in sorted({r["seed"] for r in rows if r[group] == g}):
            draw(
                ax, bx, sorted((r for r in rows if r[group] == g and r["seed"] == seed), key=lambda r: r["scale"]), seed
            )
        ax.set_title(g.replace(".weight", ""))
        ax.set_xlabel(labels["x"])
        bx.set_xlabel(labels["x"])
        if j == 0:
            ax.set_ylabel(labels["top"])
            bx.set_ylabel(labels["bottom"])
            ax.legend(fontsize=7)
    fig.suptitle(labels["title"])
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def _plot_fig2(rows, out: Path) -> list[str]:
    def draw(ax, bx, rs, seed):
        sx, c = [r["sigma_max_W"] for r in rs], f"C{seed}"
        ax.plot(sx, [r["iterations"] for r in rs], "o-", color=c, label=f"seed {seed}")
        bx.semilogy(sx, [r["restricted_ratio"] for r in rs], "o-", color=c)
        paper = [(a, r["ratio"]) for a, r in zip(sx, rs, strict=False) if not r["vacuous"]]
        bx.semilogy([a for a, _ in paper], [b for _, b in paper], "x", color=c)
        bx.axhline(1.0, color="k", lw=0.8)

    _seed_panels(
        rows,
        "arch",
        draw,
        {
            "x": "sigma_max(W_j)",
            "top": "Adam iterations to converge",
            "bottom": "sigma_max(H_block) / bound\n(o-: range-restricted, x: paper form if not vacuous)",
            "title": "Figure 2: iterations vs sigma_max (top), Theorem 2.1 ratio (bottom, >= 1)",
        },
        out / "fig2.png",
        4.0,
    )
    return ["fig2.png"]


def _plot_thm22(rows, out: Path) -> list[str]:
    def draw(ax, bx, rs, seed):
        sx, c = [r["sigma_max_W"] for r in rs], f"C{seed}"
        ax.plot(sx, [r["iterations"] for r in rs], "o-", color=c, label=f"seed {seed}")
        bx.semilogy(sx, [r["hessian_lambda_max"] for r in rs], "o-", color=c)
        bx.semilogy(sx, [r["own_block_sigma"] for r in rs], "x--", color=c)

    _seed_panels(
        rows,
        "weight",
        draw,
        {
            "x": "sigma_max(W)",
            "top": "Adam iterations to converge",
            "bottom": "lambda_max(H) (o-), sigma_max(H_WW) (x--)",
            "title": "Theorem 2.2: scaling one Transformer weight's sigma_max",
        },
        out / "theorem22.png",
        3.2,
    )
    return ["theorem22.png"]


def run(figure: str, out: Path, quick: bool = False) -> dict:
    """Compute ``figure`` ("fig1" or "fig2"), write results.json, table.md and PNGs into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra: dict = {}
    if figure == "fig1":
        params = {
            "kappas": [10.0, 100.0, 1000.0] if quick else [1e1, 3e1, 1e2, 3e2, 1e3, 3e3, 1e4, 3e4],
            "dim": 20,
            "tol": 1e-6,
        }
        rows = theory.fig1(**params)
        table = _table(rows, FIG1_COLS)
        _plot_fig1(rows, out / "fig1.png")
        plots = ["fig1.png"]
    elif figure == "fig2":
        params = (
            {"seeds": [0, 1, 2], "scales": [1.0, 8.0], "max_iters": 3000, "tol": 0.9, "archs": ["mlp", "transformer"]}
            if quick
            else {
                "seeds": [0, 1, 2],
                "scales": [1.0, 2.0, 4.0, 8.0, 16.0],
                "max_iters": 20000,
                "tol": 0.9,
                "archs": ["mlp", "cnn", "transformer"],
            }
        )
        rows = theory.fig2(**params)
        t22 = {k: params[k] for k in ("seeds", "scales", "max_iters", "tol")}
        extra["theorem22"] = theory.theorem22(**t22)
        table = (
            _table(rows, FIG2_COLS) + "\n## Theorem 2.2: one Transformer weight's sigma_max scaled\n\n"
            "`checked`: the weight whose Hessian block is bounded (`-`: none exists, the residual stream "
            "bypasses this weight; only the measured scaling is reported).\n\n" + _table(extra["theorem22"], THM22_COLS)
        )
        plots = _plot_fig2(rows, out) + _plot_thm22(extra["theorem22"], out)
    else:
        raise ValueError(f"unknown figure {figure!r}: expected fig1 or fig2")
    result = {"figure": figure, "quick": quick, "params": params, "rows": rows, **extra, "plots": plots}
    write_text(out / "results.json", json.dumps(_json_safe(result), indent=2))
    write_text(out / "table.md", f"# {figure}{' (quick)' if quick else ''}\n\n" + table)
    return result
