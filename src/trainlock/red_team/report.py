"""Worst-case aggregation, report.md, and the plots (accuracy vs learning rate per optimizer)."""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_text, writing_file
from ..io.tables import markdown_table

NOT_REACHED = 10**12
TRIALS_PNG = "trials_to_break.png"


def _start(row: dict) -> str:
    """The row's start stage (released weights, scratch, distill, ...)."""
    return (row.get("config") or {}).get("start", "released")


def _plain(row: dict) -> bool:
    """A plain run: the released weights fine-tuned on clean data, no transform, the head kept as is."""
    c = row.get("config") or {}
    ft = c.get("finetune") or {}
    return (
        _start(row) == "released"
        and not row.get("adaptive")
        and ft.get("head", "auto") == "auto"
        and c.get("data", "clean") == "clean"
        and c.get("train", "finetune") == "finetune"
    )


def _rank(row: dict) -> tuple:
    """Stronger attack first: higher accuracy, then fewer steps to target; the key breaks ties."""
    steps = row.get("steps_to_target")
    return (-row["accuracy"], NOT_REACHED if steps is None else steps, row["key"])


def ranked(rows: list[dict]) -> list[dict]:
    """Completed runs, strongest attack first (order-independent, so worker count cannot change it)."""
    return sorted((r for r in rows if r.get("accuracy") is not None), key=_rank)


def worst_case(rows: list[dict]) -> dict | None:
    """The strongest attack that uses the model: {"attack", "config", "accuracy", "steps_to_target", "diverged",
    "key"}. Runs from scratch are reference runs (an attacker's alternative, see `uplift`), not attacks on it."""
    top = [r for r in ranked(rows) if _start(r) != "scratch"]
    if not top:
        return None
    r = top[0]
    return {k: r.get(k) for k in ("attack", "config", "accuracy", "steps_to_target", "diverged", "key")}


def _fastest(rows: list[dict]) -> int | None:
    """The fewest steps to target over completed runs (distillation steps included), None if none reached it."""
    steps = [
        r["steps_to_target"] + (r["distill"]["steps"] if r.get("distill") else 0)
        for r in rows
        if r.get("accuracy") is not None and r.get("steps_to_target") is not None
    ]
    return min(steps) if steps else None


def _best_of(rows: list[dict]) -> dict | None:
    top = ranked(rows)
    if not top:
        return None
    r = top[0]
    return {"attack": r["attack"], "accuracy": r["accuracy"], "config": r["config"], "steps_to_target": _fastest(rows)}


def _ratio(a: int | None, b: int | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def headline(rows: list[dict], base_rows: list[dict] | None = None) -> dict:
    """The report's first table as data: a real attacker's best from the released weights ("locked"; insider
    runs, which read the lock's private record, are left out of it), from scratch, and (with base rows) from the unlocked base;
    the uplifts over scratch alone (locked - scratch, base - scratch: scratch is one reference among others);
    the fewest steps to target of each and the ratios locked / base and locked / scratch (how much longer
    the attacker needs; None where a target was not reached)."""
    released = [r for r in rows if _start(r) != "scratch" and not r.get("insider")]
    scratch_rows = [r for r in rows if _start(r) == "scratch"]
    base_released = [r for r in base_rows or [] if _start(r) != "scratch"]
    locked, scratch = _best_of(released), _best_of(scratch_rows)
    base = _best_of(base_released) if base_rows else None

    def adv(a: dict | None, b: dict | None) -> float | None:
        return None if a is None or b is None else a["accuracy"] - b["accuracy"]

    def st(x: dict | None) -> int | None:
        return None if x is None else x["steps_to_target"]

    return {
        "locked": locked,
        "scratch": scratch,
        "base": base,
        "scratch_uplift": adv(locked, scratch),
        "base_scratch_uplift": adv(base, scratch),
        "worst": worst_case(rows),
        "compute_ratio_vs_base": _ratio(st(locked), st(base)),
        "compute_ratio_vs_scratch": _ratio(st(locked), st(scratch)),
    }


def adaptive_vs_plain(rows: list[dict]) -> dict:
    """Best adaptive (with transforms) and best plain run on the released weights, and whether adaptive beats
    every plain one (from-scratch runs are neither)."""
    top = [r for r in ranked(rows) if _start(r) == "released"]
    adaptive = next((r for r in top if r.get("adaptive")), None)
    plain = next((r for r in top if not r.get("adaptive")), None)
    beats = adaptive is not None and (plain is None or _rank(adaptive) < _rank(plain))

    def pick(r: dict | None) -> dict | None:
        return None if r is None else {"attack": r["attack"], "accuracy": r["accuracy"]}

    return {"best_adaptive": pick(adaptive), "best_plain": pick(plain), "adaptive_beats_every_plain": beats}


def _fmt_steps(v) -> str:
    return "not reached" if v is None else str(v)


def uplift_lines(result: dict) -> list[str]:
    """The report's first section: uplift over the best reference attacker, the budget it holds at, every
    reference run (errors included)."""
    ref, budget = result.get("reference") or {}, result.get("budget") or {}

    def pts(v) -> str:
        return "-" if v is None else f"{100 * v:+.1f} points"

    def acc(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    lines = [
        "## Uplift over the best reference attacker",
        "",
        f"**{result.get('verdict', '')}**",
        "",
        markdown_table(
            ["best reference", "accuracy", "locked uplift", "base uplift", "steps per run", "train / test examples"],
            [
                [
                    f"`{ref.get('attacker')}`",
                    acc(ref.get("accuracy")),
                    pts(result.get("uplift")),
                    pts(result.get("base_uplift")),
                    budget.get("steps_per_run"),
                    f"{budget.get('n_train')} / {budget.get('n_test')}",
                ]
            ],
        ),
        "",
        "uplift = the best real attack from the released weights minus the best reference attacker (what an "
        "attacker uses instead of the released model: the same architecture from scratch at every optimizer and "
        "rate the attack used, and the named reference attackers), on the same training split.",
        "",
    ]
    others = [r for r in ref.get("runs") or [] if not str(r.get("attacker", "")).startswith("scratch")]
    if others:
        lines += [
            markdown_table(
                ["reference run", "accuracy", "wall s", "error"],
                [
                    [f"`{r['attacker']}`", acc(r.get("accuracy")), f"{r.get('wall_s') or 0:.1f}", r.get("error") or ""]
                    for r in others
                ],
            ),
            "",
        ]
    return lines


def write_report(
    out: Path,
    title: str,
    rows: list[dict],
    base_rows: list[dict] | None = None,
    calibration: dict | None = None,
    result: dict | None = None,
) -> Path:
    """report.md (uplift over the best reference first when `result` has it, then the worst case) plus
    lr_sweep.png; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    worst = worst_case(rows)
    cmp_ = adaptive_vs_plain(rows)
    lines = [f"# Red team: {title}", ""]
    if result is not None and "reference" in result:
        lines += uplift_lines(result)
    head = headline(rows, base_rows)
    if worst is None:
        lines.append("No run completed.")
    else:

        def f(x: dict | None) -> str:
            return "-" if x is None else f"{x['accuracy']:.4f}"

        def g(v, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        def stt(x: dict | None) -> str:
            return "-" if x is None else _fmt_steps(x["steps_to_target"])

        lk, sc, bs = head["locked"], head["scratch"], head["base"]
        res = result or {}
        ref = (res.get("reference") or {}).get("accuracy")
        ref_acc = "-" if ref is None else f"{ref:.4f}"
        up, base_up = res.get("uplift"), res.get("base_uplift")
        if result is None:  # no reference measured: scratch is the only one
            ref_acc, up, base_up = f(sc), head["scratch_uplift"], head["base_scratch_uplift"]
        ins = " (insider)" if next((r for r in rows if r.get("key") == worst["key"]), {}).get("insider") else ""
        lines += [
            markdown_table(
                [
                    "attack task",
                    "base",
                    "locked",
                    "scratch",
                    "best reference",
                    "locked uplift",
                    "base uplift",
                    "worst attack",
                    "steps to target (base / locked / scratch)",
                    "compute locked / base",
                    "locked / scratch",
                ],
                [
                    [
                        title,
                        f(bs),
                        f(lk),
                        f(sc),
                        ref_acc,
                        g(up, "+.4f"),
                        g(base_up, "+.4f"),
                        f"`{worst['attack']}`{ins}",
                        f"{stt(bs)} / {stt(lk)} / {stt(sc)}",
                        g(head["compute_ratio_vs_base"], ".2f"),
                        g(head["compute_ratio_vs_scratch"], ".2f"),
                    ]
                ],
            ),
            "",
            "base / locked: the best accuracy any attack in the suite reached from those weights (distillation "
            "counts as an attack on the locked model; insider runs do not); scratch: the best from the same "
            "architecture re-initialized, each attack matched by a run at its optimizer, rate and steps; best "
            "reference: the best of those and the reference attackers. A lock leaves the attacker nothing when the "
            "locked uplift is about 0; it matters only where the base's uplift is large. "
            "Steps to target: the fewest over the suite (distillation steps included).",
            "",
        ]
        div = f" (diverged; last good state: {worst['diverged']})" if worst["diverged"] else ""
        target = (worst["config"].get("finetune") or {}).get("target_accuracy")
        lines.append(
            f"**Worst case: `{worst['attack']}` reaches accuracy {worst['accuracy']:.4f}; steps to "
            f"target {g(target, 'g')}: {_fmt_steps(worst['steps_to_target'])}**{div}"
        )
    if base_rows:
        bw = worst_case(base_rows)
        if bw:
            lines.append(
                f"\nUnlocked base under the same suite: worst case `{bw['attack']}` reaches {bw['accuracy']:.4f}."
            )
    if cmp_["best_plain"] or cmp_["best_adaptive"]:

        def show(r):
            return "none completed" if r is None else "`{}` {:.4f}".format(r["attack"], r["accuracy"])

        yes = "yes" if cmp_["adaptive_beats_every_plain"] else "no"
        lines.append("")
        lines.append(
            f"Best adaptive attack: {show(cmp_['best_adaptive'])}; best plain optimizer: "
            f"{show(cmp_['best_plain'])}. An adaptive attack beats every plain optimizer: **{yes}**."
        )

    def auth(r: dict) -> str:
        a = r.get("authorized_after_transform")
        return "" if a is None else f"{a:.4f}"

    lines += [
        "",
        "## Every run, strongest first",
        "",
        markdown_table(
            ["#", "attack", "accuracy", "steps to target", "authorized after transform", "diverged", "insider", "s"],
            [
                [
                    i,
                    f"`{r['attack']}`",
                    f"{r['accuracy']:.4f}",
                    _fmt_steps(r.get("steps_to_target")),
                    auth(r),
                    "yes" if r.get("diverged") else "",
                    "yes" if r.get("insider") else "",
                    f"{r.get('wall_s', 0):.1f}",
                ]
                for i, r in enumerate(ranked(rows), 1)
            ],
        ),
    ]
    certified = [r for r in ranked(rows) if r.get("certificates_after")]
    if certified:

        def held(r: dict) -> str:
            after = r["certificates_after"]
            return after.get("error") or f"{sum(bool(v) for v in after.values())}/{len(after)}"

        def first(r: dict) -> str:
            return ", ".join(f"{k.split(':')[0]}: {v}" for k, v in (r.get("lock_first_broken") or {}).items()) or "-"

        lines += [
            "",
            "## The lock's certificates after each attack",
            "",
            markdown_table(
                ["attack", "accuracy", "certificates holding after", "first broken at step (plain runs)"],
                [[f"`{r['attack']}`", f"{r['accuracy']:.4f}", held(r), first(r)] for r in certified],
            ),
        ]
    poisoned = [r for r in rows if r.get("backdoor_after")]
    if poisoned:
        if calibration is None:
            cal = (
                "Not calibrated (no unlocked base given): the row says nothing unless the base learns the backdoor "
                "under the same setting."
            )
        else:
            ok = "reaches" if calibration["calibrated"] else "does NOT reach"
            cal = (
                f"Calibrated on the unlocked base: poison fraction {calibration['poison_fraction']:g}, "
                f"{calibration['max_steps']} steps; the base {ok} ASR {calibration['target_asr']:g} "
                f"({calibration['asr_base']:.3f})."
            )
        lines += [
            "",
            "## Backdoor injection (poisoned fine-tuning)",
            "",
            cal,
            "",
            markdown_table(
                [
                    "attack",
                    "clean acc before",
                    "clean F1 before",
                    "ASR before",
                    "clean acc after",
                    "clean F1 after",
                    "ASR after",
                ],
                [
                    [
                        f"`{r['attack']}`",
                        *(
                            f"{m[k]:.4f}"
                            for m in (r["backdoor_before"], r["backdoor_after"])
                            for k in ("clean_accuracy", "clean_f1", "asr")
                        ),
                    ]
                    for r in poisoned
                ],
            ),
        ]
    skipped = [r for r in rows if r.get("skipped")]
    if skipped:
        lines += ["", "## Skipped: the transform does not apply to this architecture", ""]
        lines += [f"- `{r['attack']}`: {r['skipped']}" for r in skipped]
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines += ["", "## Runs that raised an error", ""]
        lines += [f"- `{r['attack']}`: {r['error']}" for r in errors]
    curve = search_plot(rows, out / "search.png", base_rows)
    if curve:
        lines += ["", "## Adaptive search: best accuracy so far per trial", "", f"![search]({curve.name})"]
    plot = lr_plot(rows, out / "lr_sweep.png", base_rows)
    if plot:
        lines += ["", "## Accuracy versus learning rate (plain optimizers)", "", f"![lr sweep]({plot.name})"]
    if (out / TRIALS_PNG).is_file():
        lines += [
            "",
            "## Trials to break: best accuracy so far per attack run",
            "",
            f"![trials to break]({TRIALS_PNG})",
        ]
    path = out / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path


def lr_plot(rows: list[dict], path: Path, base_rows: list[dict] | None = None) -> Path | None:
    """Accuracy vs learning rate, one line per optimizer (plain runs only), like the paper's Fig. 3/4."""

    def series(rs):
        by: dict[str, list[tuple[float, float]]] = {}
        for r in rs:
            if r.get("accuracy") is None or not _plain(r):
                continue
            loop = r["config"]["finetune"]["loop"]
            by.setdefault(loop["optimizer"], []).append((loop["lr"], r["accuracy"]))
        return {k: sorted(v) for k, v in by.items() if len(v) >= 1}

    locked, base = series(rows), series(base_rows or [])
    if not locked:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    names = sorted(locked)
    cols = min(5, len(names))
    rows_n = -(-len(names) // cols)
    fig, axes = plt.subplots(rows_n, cols, figsize=(2.6 * cols, 2.2 * rows_n), squeeze=False, sharey=True)
    for ax, opt in zip(axes.flat, names, strict=False):  # the grid may have more axes than optimizers
        if opt in base:
            ax.plot(*zip(*base[opt], strict=True), "x--", color="grey", label="base")
        ax.plot(*zip(*locked[opt], strict=True), "o-", color="C3", label="locked")
        ax.set_title(opt, fontsize=9)
        ax.set_xscale("log")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # no crowded minor labels
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.supxlabel("learning rate", fontsize=9)
    fig.supylabel("test accuracy after fine-tuning", fontsize=9)
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def best_so_far(rows: list[dict]) -> list[float]:
    """The running maximum of accuracy over the search's trials, in trial order (a failed trial counts 0)."""
    out, best = [], 0.0
    for r in rows:
        if r.get("search"):
            best = max(best, r.get("accuracy") or 0.0)
            out.append(best)
    return out


def search_plot(rows: list[dict], path: Path, base_rows: list[dict] | None = None) -> Path | None:
    """Best accuracy so far versus trial, locked and base (TamperBench's curve); None without search rows."""
    locked, base = best_so_far(rows), best_so_far(base_rows or [])
    if not locked:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    if base:
        ax.plot(range(1, len(base) + 1), base, "x--", color="grey", label="base")
    ax.plot(range(1, len(locked) + 1), locked, "o-", color="C3", label="locked")
    ax.set_xlabel("trial")
    ax.set_ylabel("best accuracy so far")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def trials_curve(rows: list[dict]) -> list[float]:
    """Best accuracy so far over the attack runs (on the released weights: no run from scratch, no insider run),
    in the suite's order: what an attacker has after k runs (a failed run counts 0)."""
    out, best = [], 0.0
    for r in rows:
        if _start(r) == "scratch" or r.get("insider") or r.get("skipped"):
            continue
        best = max(best, r.get("accuracy") or 0.0)
        out.append(best)
    return out


def spread(values: list) -> dict | None:
    """{"min", "median", "max"} of the values that are not None; None when none is."""
    import statistics

    vs = [v for v in values if v is not None]
    return None if not vs else {"min": min(vs), "median": statistics.median(vs), "max": max(vs)}


def write_budgets_report(out: Path, title: str, result: dict) -> Path:
    """report.md of a run over several step budgets and seeds: one row per step budget (min / median / max over
    the seeds), the worst case for the defender first, every (budget, seed) below with its own report."""
    budgets, at, data = result["budgets"], result.get("worst_case_at") or {}, result.get("budget") or {}
    seeds = sorted({s["seed"] for b in budgets for s in b["seeds"]})

    def acc(x: dict | None) -> str:
        return "-" if x is None else f"{x['min']:.4f} / {x['median']:.4f} / {x['max']:.4f}"

    def pts(x: dict | None) -> str:
        return "-" if x is None else " / ".join(f"{100 * x[k]:+.1f}" for k in ("min", "median", "max"))

    def one(v, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"# Red team: {title}, {len(budgets)} step budget(s) x {len(seeds)} seed(s)",
        "",
        "## Uplift over the best reference attacker, per step budget",
        "",
        f"**{result.get('verdict', '')}** (the worst case for the defender: {at.get('dir')})",
        "",
        markdown_table(
            [
                "steps per run",
                "seeds",
                "locked (min / median / max)",
                "best reference",
                "locked uplift (points)",
                "base uplift (points)",
            ],
            [
                [
                    b["steps"],
                    len(b["seeds"]),
                    acc(b["locked"]),
                    acc(b["reference"]),
                    pts(b["uplift"]),
                    pts(b["base_uplift"]),
                ]
                for b in budgets
            ],
        ),
        "",
        f"Data budget: {data.get('n_train')} training / {data.get('n_test')} test examples; seeds "
        f"{' '.join(map(str, seeds))}. Each row gives min / median / max over the seeds. uplift = the best real "
        "attack from the released weights minus the best reference attacker (the same architecture from scratch at "
        "every optimizer, rate and step budget the attack used, and the named reference attackers), at the same "
        "step budget and seed. The headline (summary.json, --json) is the budget and seed with the largest uplift.",
        "",
        "## Every step budget and seed",
        "",
        markdown_table(
            ["steps per run", "seed", "locked", "best reference", "locked uplift", "base uplift", "report"],
            [
                [
                    b["steps"],
                    s["seed"],
                    one(s["locked"], ".4f"),
                    f"{one(s['reference']['accuracy'], '.4f')} (`{s['reference']['attacker']}`)",
                    one(s["uplift"], "+.4f"),
                    one(s["base_uplift"], "+.4f"),
                    f"[{s['dir']}]({s['dir']}/report.md)",
                ]
                for b in budgets
                for s in b["seeds"]
            ],
        ),
    ]
    if (out / TRIALS_PNG).is_file():
        lines += [
            "",
            "## Trials to break: best accuracy so far per attack run",
            "",
            f"![trials to break]({TRIALS_PNG})",
        ]
    path = Path(out) / "report.md"
    write_text(path, "\n".join(lines) + "\n")
    return path
