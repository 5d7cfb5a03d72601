"""Commands that attack a lock: attack, redteam, relearn."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .common import (
    add_checkpoint_flags,
    add_config_flags,
    add_subset_flags,
    check_output_dir,
    check_output_file,
    checkpoint_for,
    config_from_args,
    done_with,
    float_type,
    int_type,
    load_base,
    load_with_task,
    subset_task,
    write_json,
    writing,
)

logger = logging.getLogger(__name__)

# the red team sets the optimizer and learning rate per run; these loop fields are not flags of `redteam`
_PER_RUN = ("optimizer", "lr", "lr_gamma", "weight_decay", "momentum")


REFERENCE_MODEL_HELP = (
    "the marginal-risk counterfactual: also attack another open model an attacker could use instead (built "
    "pretrained with a fresh head, probed and fine-tuned at the same step budget), so the uplift is over the best "
    "other open model, not only over scratch and classical: e.g. effnet-lite1 for an effnet-lite0 release, "
    "smollm2-135m for a minilm-l6 one; a registered model name or hf:DIR (a local save_pretrained directory). "
    "Adds the reference alternative:NAME; repeatable"
)


def add_reference_model_flag(p) -> None:
    """--reference-model NAME|hf:DIR (repeatable, several per flag): appends `alternative:NAME` to the references."""
    p.add_argument(
        "--reference-model",
        dest="reference_models",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME|hf:DIR",
        help=REFERENCE_MODEL_HELP,
    )


def reference_names(references, args) -> tuple[str, ...]:
    """`references` and `alternative:NAME` for each --reference-model, each checked (a one-line ValueError
    before any work: an unknown reference or model, an hf:DIR without config.json)."""
    from ..attacks.references import check_reference

    names = tuple(dict.fromkeys([*references, *(f"alternative:{m}" for m in args.reference_models)]))
    for name in names:
        check_reference(name)
    return names


def add_attack(p) -> None:
    from ..attacks import FineTuneConfig

    p.add_argument("model_dir", help="model directory (base or locked)")
    p.add_argument("--task", required=True, help="the unauthorized task")
    p.add_argument("--json", default=None, help='write {"accuracy", "curve", "steps_to_target", ...} here')
    p.add_argument("--save", default=None, help="also save the fine-tuned model to this directory")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --save")
    p.add_argument(
        "--no-scratch",
        dest="scratch",
        action="store_false",
        help="skip the from-scratch baseline (the same architecture re-initialized, the same attack); by "
        "default it runs after the attack as one of the reference attackers the uplift is measured against",
    )
    p.add_argument(
        "--scratch-lrs",
        type=float_type(0, open_low=True),
        nargs="+",
        default=(),
        metavar="LR",
        help="the from-scratch baseline is the best over the attack's --lr and these (e.g. 1e-4 1e-3: a "
        "fresh model often trains best at a larger rate than a pretrained one)",
    )
    p.add_argument(
        "--base",
        default=None,
        help="the unlocked base model, attacked the same way for 'base - scratch' (default: the base "
        "recorded by `trainlock lock`, when it is still there)",
    )
    p.add_argument(
        "--references",
        nargs="*",
        default=["classical"],
        metavar="NAME",
        help="reference attackers besides scratch (what an attacker uses instead of this model on the same data; "
        "default: classical); the report gives uplift = this attack - the best reference. `--references` alone: "
        "scratch only",
    )
    add_reference_model_flag(p)
    add_subset_flags(p)
    add_checkpoint_flags(p, where="--save")
    add_config_flags(p, FineTuneConfig)


def cmd_attack(args) -> int:
    from ..api import attack
    from ..attacks import FineTuneConfig
    from ..io.artifacts import load, save
    from ..tasks import get

    if args.save:
        check_output_dir(args.save, [args.model_dir], args.overwrite, flag="--save")
    check_output_file(args.json)
    args.references = reference_names(args.references, args)  # a bad name fails before any work
    for lr in args.scratch_lrs:
        if not lr > 0:
            raise ValueError(f"--scratch-lrs must be positive, got {lr:g}")
    cfg = config_from_args(FineTuneConfig, args)
    checkpoint = checkpoint_for(args, args.save, flag="--save")
    model, meta = load(args.model_dir)
    # the base for 'base - scratch', checked before any work (a user's --base that fails is refused)
    base = load_base(
        args.base or (meta.get("base") if args.scratch else None), args.model_dir, meta, given=bool(args.base)
    )
    task = subset_task(get(args.task), args)  # once: the attack, the scratch baseline and the base share it
    res = attack(model, cfg, task, progress=True, checkpoint=checkpoint)
    reached = f"{res.steps_to_target} steps" if res.steps_to_target is not None else "not reached"
    print(
        f"attack {cfg.loop.optimizer} lr={cfg.loop.lr:g} on {res.task}: accuracy {res.accuracy:.4f} after "
        f"{res.steps} steps; per epoch {[round(a, 4) for a in res.curve]}; target {cfg.target_accuracy:g}: {reached}"
    )
    if res.diverged:
        logger.warning("diverged: %s", res.diverged)
    out = res.to_dict()
    if args.scratch:
        out.update(_baselines(args, meta, model, cfg, res, task, base[0]))
    if args.save:
        with writing(args.save):
            save(
                res.model, args.save, {"task": res.task, "metrics": {"accuracy": res.accuracy}, "attack": res.to_dict()}
            )
        done_with(checkpoint)
    write_json(args.json, out)
    return 0


def _baselines(args, meta: dict, model, cfg, res, task, base=None) -> dict:
    """The reference attackers (scratch: the same architecture re-initialized, the same attack; and
    --references) and, when the base is at hand, the base's run: accuracies and uplifts over the best reference."""
    from ..api import attack
    from ..attacks.references import ReferenceRun, ReferenceTarget, best_reference
    from ..attacks.scratch import scratch_baseline
    from ..red_team.uplift import reference_runs
    from ..tasks import TextTask, for_model

    sres = scratch_baseline(model, cfg, task, progress=True, lrs=tuple(args.scratch_lrs))
    scratch, lr = sres.accuracy, sres.config["loop"]["lr"]
    runs = [
        ReferenceRun(
            f"scratch:{cfg.loop.optimizer}@{lr:g}",
            scratch,
            n_train=len(task.y_train) if not isinstance(task, TextTask) else len(task.labels_train),
        ).to_dict()
    ]
    target = ReferenceTarget(
        for_model(task, model), model, task if isinstance(task, TextTask) else None, res.steps, cfg.loop.seed
    )
    runs += reference_runs(target, tuple(args.references))
    best = best_reference(runs) or {"accuracy": None, "attacker": None}
    uplift = None if best["accuracy"] is None else res.accuracy - best["accuracy"]
    out = {
        "scratch_accuracy": scratch,
        "scratch_lr": lr,
        "reference": {**best, "runs": runs},
        "uplift": uplift,
        "budget": {"steps": res.steps, "n_train": runs[0]["n_train"]},
    }
    grid = f", best over lr {sorted({cfg.loop.lr, *args.scratch_lrs})}: lr {lr:g}" if args.scratch_lrs else ""
    print(f"from scratch (same architecture re-initialized, same attack{grid}): {scratch:.4f}")
    for r in runs[1:]:
        print(f"reference {r['attacker']}: " + (f"failed: {r['error']}" if r.get("error") else f"{r['accuracy']:.4f}"))
    if uplift is not None:
        print(
            f"uplift over the best reference ({best['attacker']}, {best['accuracy']:.4f}): {100 * uplift:+.1f} "
            f"points ({res.steps} steps, {runs[0]['n_train']} training examples)"
        )
    base_dir = args.base or meta.get("base")
    if base is not None:  # loaded and checked before the attack (load_base)
        base_acc = attack(base, cfg, task, progress=True).accuracy
        base_uplift = None if best["accuracy"] is None else base_acc - best["accuracy"]
        out.update(base_accuracy=base_acc, base_uplift=base_uplift)
        if base_uplift is not None:
            note = (
                " (nothing to protect on this task)"
                if base_uplift < 0.05
                else " (a lock matters only where this is large)"
            )
            print(f"base {base_dir}: {base_acc:.4f}; base uplift {100 * base_uplift:+.1f} points{note}")
    return out


REDTEAM_DESCRIPTION = (
    "Plain optimizers over a learning-rate grid, adaptive weight-space transforms, "
    "reparametrizations and backdoor data against MODEL_DIR on TASK. Resumable: rerun the same "
    "command after an interruption and finished runs are kept."
)


def add_redteam(p) -> None:
    from ..red_team import RedTeamConfig

    p.add_argument("model_dir", help="model directory (the locked model)")
    p.add_argument("--task", required=True, help="the unauthorized task")
    p.add_argument("--out", default=None, help="results directory (default runs/redteam-MODEL-TASK)")
    p.add_argument("--base", default=None, help="unlocked base model directory: run the same suite on it too")
    p.add_argument("--retain-task", default=None, help="authorized task (default: the model's own)")
    p.add_argument("--json", default=None, help='write {"worst": ..., "runs": [...]} here')
    add_subset_flags(p)
    add_config_flags(p, RedTeamConfig, skip=(*_PER_RUN, "steps", "seeds"))
    fields = {f.name: f for f in dataclasses.fields(RedTeamConfig)}
    for name, metavar, low in (("steps", "N", 1), ("seeds", "SEED", 0)):  # one or more values: nargs="+"
        p.add_argument(
            f"--{name}", type=int_type(low), nargs="+", default=(), metavar=metavar, help=fields[name].metadata["help"]
        )
    add_reference_model_flag(p)


def cmd_redteam(args) -> int:
    from .. import tasks
    from ..atomic import exclusive
    from ..io.artifacts import load
    from ..red_team import RedTeamConfig, redteam

    cfg = config_from_args(RedTeamConfig, args)
    cfg = dataclasses.replace(cfg, references=reference_names(cfg.references, args))  # bad names fail here
    out = Path(args.out or f"runs/redteam-{Path(args.model_dir).name}-{args.task.replace(':', '_').replace('/', '_')}")
    inputs = [args.model_dir] + ([args.base] if args.base else [])
    check_output_dir(out, inputs, overwrite=True)  # an existing --out is resumed (when it holds this model's runs)
    check_output_file(args.json)
    model, meta = load(args.model_dir)
    base = load_base(args.base, args.model_dir, meta)[0]  # the lock's own base, checked before any work
    retain_name = args.retain_task or meta.get("task")
    retain = tasks.get(retain_name) if retain_name else None
    if retain is not None and args.test_samples is not None:  # its accuracy per run on as many test samples
        retain = retain.subset(n_test=args.test_samples, seed=0)
    with exclusive(out):
        res = redteam(
            model,
            subset_task(tasks.get(args.task), args),
            cfg,
            out=out,
            retain=retain,
            base=base,
            meta=meta,
            progress=True,
        )
    w = res["worst"]
    if w is None:  # exit 1 (after the report and --json): there is no result to read
        print(f"no run completed (every attack errored or was skipped); see {out / 'report.md'}")
    else:
        steps = "not reached" if w["steps_to_target"] is None else w["steps_to_target"]
        print(f"worst case: {w['attack']} -> accuracy {w['accuracy']:.4f} on {args.task} (steps to target: {steps})")

    def acc(x: dict | None) -> str:
        return "-" if x is None else f"{x['accuracy']:.4f} ({x['attack']})"

    print(f"from the released weights: {acc(res['locked'])}; from scratch: {acc(res['scratch'])}")
    if res.get("base"):
        print(f"unlocked base, same suite: {acc(res['base'])}")
    ref, budget = res["reference"], res["budget"]
    if ref["accuracy"] is not None:
        base_up = "" if res["base_uplift"] is None else f"; base uplift {100 * res['base_uplift']:+.1f}"
        up = "unknown (no attack finished)" if res["uplift"] is None else f"{100 * res['uplift']:+.1f} points"
        print(
            f"best reference attacker: {ref['attacker']} -> {ref['accuracy']:.4f}; uplift of the released weights "
            f"{up}{base_up} ({budget['steps_per_run']} steps per run, "
            f"{budget['n_train']} training examples)"
        )
    for r in ref["runs"]:
        if r.get("error") and not r["attacker"].startswith("scratch"):
            print(f"reference {r['attacker']} failed: {r['error']}")
    print(res["verdict"])
    at = res.get("worst_case_at")
    if at is not None:  # several step budgets or seeds: one line per budget, min / median / max over the seeds
        for b in res["budgets"]:
            up = b["uplift"]
            spread = "-" if up is None else " / ".join(f"{100 * up[k]:+.1f}" for k in ("min", "median", "max"))
            print(f"{b['steps']} steps per run, {len(b['seeds'])} seed(s): uplift min / median / max {spread} points")
    c = res["comparison"]
    print(f"an adaptive attack beats every plain optimizer: {'yes' if c['adaptive_beats_every_plain'] else 'no'}")
    rows = out / "runs.jsonl" if at is None else out / "steps-*" / "seed-*" / "runs.jsonl"
    print(f"report: {out / 'report.md'}  rows: {rows}  trials to break: {res['trials_to_break']['png']}")
    keys = (
        "worst",
        "locked",
        "scratch",
        "base",
        "compute_ratio_vs_base",
        "compute_ratio_vs_scratch",
        "comparison",
        "base_worst",
        "reference",
        "uplift",
        "base_uplift",
        "budget",
        "verdict",
        "worst_case_at",
        "budgets",
        "trials_to_break",
        "runs",
    )
    write_json(args.json, {k: res.get(k) for k in keys if k in res or k != "worst_case_at"})
    return 0 if w is not None else 1


RELEARN_DESCRIPTION = (
    "The paper's forgetting study: continue training MODEL_DIR without one class (unlearning), "
    "lock the result with SpecDef on the remaining classes (the --lock-* flags), then relearn with "
    "SGD on the full task; prints per-class test accuracy after each stage."
)


def _relearn_lock_defaults():
    from ..locks import SpecDefConfig, specdef_loop

    return SpecDefConfig(loop=specdef_loop(lr=5.0, epochs=5))  # the demo's lock setting


def add_relearn(p) -> None:
    from ..attacks.relearn import RelearnConfig
    from ..locks import SpecDefConfig

    p.add_argument("model_dir", help="the trained base model")
    p.add_argument("--task", default=None, help="task (default: the model's own)")
    p.add_argument("--json", default=None, help="write the rows here")
    p.add_argument(
        "--device",
        default=None,
        help="cpu, cuda or auto for all three loops (unlearn, lock, relearn); overrides their own --*-device flags",
    )
    add_config_flags(p, RelearnConfig)
    lock = p.add_argument_group("the SpecDef lock applied to the unlearned model")
    add_config_flags(lock, SpecDefConfig, _relearn_lock_defaults(), prefix="lock_")


def cmd_relearn(args) -> int:
    from .. import tasks
    from ..api import lock
    from ..attacks.relearn import RelearnConfig, relearning_study
    from ..locks import SpecDefConfig

    check_output_file(args.json)
    cfg = config_from_args(RelearnConfig, args)
    model, _meta, name = load_with_task(args)
    lock_cfg = config_from_args(SpecDefConfig, args, _relearn_lock_defaults(), prefix="lock_")
    if args.device is not None:
        cfg = dataclasses.replace(
            cfg,
            unlearn=dataclasses.replace(cfg.unlearn, device=args.device),
            relearn=dataclasses.replace(cfg.relearn, device=args.device),
        )
        lock_cfg = dataclasses.replace(lock_cfg, loop=dataclasses.replace(lock_cfg.loop, device=args.device))
    rows = relearning_study(
        model, tasks.get(name), cfg, lambda m, t: lock(m, lock_cfg, t, progress=True).model, progress=True
    )
    n = len(rows[0]["per_class"])
    print(f"{'stage':<36}" + "".join(f"{c:>7}" for c in range(n)) + f"{'others':>8}")
    for r in rows:
        print(f"{r['name']:<36}" + "".join(f"{a:>7.3f}" for a in r["per_class"]) + f"{r['retain_accuracy']:>8.3f}")
    write_json(args.json, {"task": name, "config": cfg.to_dict(), "lock": lock_cfg.to_dict(), "rows": rows})
    return 0


HEADSTART_DESCRIPTION = """\
Does MODEL give an attacker anything over their best alternative, and at which data budget? For each
training-set size in --budgets (seeded subsets of TASK's training split; the same test split), the model's
best attack (fine-tuning at each --lrs, and the probe: logistic regression on its frozen features) beside
every reference attacker on the same examples: the architecture from scratch at the same optimizer, rates and
steps, --references (classical: TF-IDF + logistic regression on text, logistic regression on pixels) and
--reference-model (another open model, probed and fine-tuned the same way: alternative:NAME).
Prints the table (uplift = model's best - best reference) and writes headstart.json / .md / .png to --out.
A lock can only matter where the uplift is real: run this before locking. Resumable."""


def add_headstart(p) -> None:
    from ..red_team.headstart import HeadstartConfig

    p.add_argument("model", help="a model directory, or a registered model name built pretrained (e.g. minilm)")
    p.add_argument("--task", required=True, help="the task an attacker wants")
    p.add_argument("--out", default=None, help="results directory (default runs/headstart-MODEL-TASK)")
    p.add_argument("--json", default=None, help='write {"budgets": [{"n", "model", "reference", "uplift"}]} here')
    add_config_flags(p, HeadstartConfig)
    add_reference_model_flag(p)


def cmd_headstart(args) -> int:
    from .. import tasks
    from ..atomic import exclusive
    from ..io.artifacts import load
    from ..red_team.headstart import HeadstartConfig, format_headstart, headstart

    cfg = config_from_args(HeadstartConfig, args)
    cfg = dataclasses.replace(cfg, references=reference_names(cfg.references, args))  # bad names fail here
    task = tasks.get(args.task)  # an unknown task fails here, before any work
    name = Path(args.model).name
    out = Path(args.out or f"runs/headstart-{name}-{args.task.replace(':', '_').replace('/', '_')}")
    check_output_dir(out, [args.model] if Path(args.model).is_dir() else [], overwrite=True)
    check_output_file(args.json)
    if Path(args.model).is_dir():
        model = load(args.model)[0]
    else:  # a registered model, built pretrained with a fresh head for the task (e.g. minilm-l6, effnet-lite0)
        from ..models import MODELS, build

        if args.model not in MODELS:
            raise ValueError(
                f"{args.model!r} is neither a model directory nor a registered model ({', '.join(MODELS.names())})"
            )
        model = build(args.model, input_shape=getattr(task, "input_shape", None), num_classes=task.num_classes)
    with exclusive(out):
        res = headstart(model, task, cfg, out=out, progress=True)
    print(format_headstart(res))
    for row in res["budgets"]:
        for r in row["reference_runs"]:
            if r.get("error") and not r["attacker"].startswith("scratch"):
                print(f"n={row['n']}: reference {r['attacker']} failed: {r['error']}")
    print(f"-> {out} (headstart.json, headstart.md, headstart.png)")
    write_json(args.json, {"task": res["task"], "budgets": res["budgets"]})
    return 0


COMMANDS = [
    (
        "attack",
        "fine-tune a saved model on an unauthorized task",
        "Fine-tune a copy of the model on TASK and report how fast it learns.",
        add_attack,
        cmd_attack,
    ),
    (
        "headstart",
        "the model's best attack beside the best reference attacker, per data budget (uplift)",
        HEADSTART_DESCRIPTION,
        add_headstart,
        cmd_headstart,
    ),
    (
        "redteam",
        "run the attack suite against a model; worst case first",
        REDTEAM_DESCRIPTION,
        add_redteam,
        cmd_redteam,
    ),
    (
        "relearn",
        "unlearn a class, lock, relearn: per-class accuracy at every stage",
        RELEARN_DESCRIPTION,
        add_relearn,
        cmd_relearn,
    ),
]
