"""`trainlock` command line: a thin layer over the Python API.

    trainlock tasks
    trainlock train  --task mnist --model cnn --out runs/base
    trainlock lock   runs/base --out runs/locked
    trainlock attack runs/locked --task fashion-mnist --optimizer adam --lr 1e-3 --epochs 1
    trainlock eval   runs/locked --task mnist
    trainlock demo   [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

EPILOG = """examples:
  trainlock tasks                                    list tasks and whether their data is installed
  trainlock train  --task mnist --model cnn --out runs/base
  trainlock lock   runs/base --out runs/locked --alpha 0.5 --top-k 1 --epochs 5 --lr 5
  trainlock attack runs/locked --task fashion-mnist --optimizer adam --lr 1e-3 --json attack.json
  trainlock eval   runs/locked --task mnist
  trainlock lock   runs/base --out runs/capped --spec '{"type": "spectral-cap", "max_sigma": 2.0}'
  trainlock verify runs/locked                       recompute every claim from the weights
  trainlock redteam runs/locked --task fashion-mnist --budget 20 --base runs/base
  trainlock demo   --quick                           the whole story in under two minutes

Tasks are registered names (see `trainlock tasks`) or npz:PATH / idx:DIR for your own data.
"""

HELP = {  # one line per config field, shared by every command that takes the field
    "optimizer": "optimizer name (sgd, adam, adamw, adadelta)",
    "lr": "learning rate",
    "epochs": "passes over the training split",
    "batch_size": "minibatch size",
    "seed": "random seed (data order, fresh heads)",
    "max_steps": "stop after this many optimizer steps in all",
    "lr_gamma": "step-LR decay per epoch (0.7 in the paper); 0 for a constant rate",
    "weight_decay": "weight decay (default: the optimizer's own)",
    "momentum": "SGD momentum (default 0.9)",
    "device": "cpu, cuda, or auto",
    "alpha": "retain-loss weight; 1 - alpha weighs the spectral term",
    "top_k": "singular values per weight matrix to inflate",
    "retain": "retain loss: ce (task cross-entropy), kl (KL to the original), ce+kl",
    "include": "regex on parameter names to lock (default: every Linear and Conv weight)",
    "exclude": "regex on parameter names to leave alone",
    "conv_mode": "reshape: conv kernel as (out, in*kh*kw) matrix; operator: true conv operator norm",
    "head": "auto: fresh head when the label count differs; keep; reset",
    "target_accuracy": "accuracy whose first crossing gives steps_to_target",
    "eval_every": "steps between accuracy checks",
    "eval_samples": "test samples used by those checks",
    "snapshot_every": "steps between last-good-state snapshots",
    "forget_class": "the class to unlearn and then relearn",
    "unlearn_epochs": "epochs of continued training without the class",
    "unlearn_optimizer": "optimizer for unlearning",
    "unlearn_lr": "learning rate for unlearning",
    "relearn_optimizer": "optimizer of the relearning attack (the paper: sgd)",
    "relearn_lr": "learning rate of the relearning attack (the paper: 0.1)",
    "relearn_epochs": "epochs of the relearning attack",
}


def _add_config_flags(p: argparse.ArgumentParser, cls, skip: tuple[str, ...] = ()) -> None:
    """One --flag per dataclass field, typed from its default; defaults shown in --help."""
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default
        kind = type(default) if default is not None else (int if f.name in ("max_steps",) else float)
        if f.name in ("include", "exclude"):
            kind = str
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=default,
                       help=f"{HELP.get(f.name, f.name)} (default: {default})")


def _config(cls, args: argparse.Namespace):
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def _load_with_task(args) -> tuple:
    """(model, meta, task name) for commands that take MODEL_DIR and --task (default: the model's own)."""
    from ..io.artifacts import load

    model, meta = load(args.model_dir)
    name = args.task or meta.get("task")
    if not name:
        raise SystemExit("error: the model records no task; pass --task")
    return model, meta, name


def _write_json(path: str | None, data: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True))
        print(f"wrote {path}")


def cmd_tasks(args) -> int:
    from .. import tasks

    rows = tasks.available()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "yes" if r["present"] else f"no   install: {r['install_hint']}"
        print(f"{r['name']:<{width}}  {r['description']:<34}  present: {mark}")
    print("\nalso: npz:PATH (arrays x_train, y_train, x_test, y_test) and idx:DIR (MNIST-format IDX files)")
    return 0


def cmd_train(args) -> int:
    from .. import models, tasks
    from ..io.artifacts import save
    from ..train.loop import LoopConfig, evaluate, fit

    task = tasks.get(args.task)
    kwargs = json.loads(args.model_kwargs) if args.model_kwargs else {}
    model = models.build(args.model, input_shape=task.input_shape, num_classes=task.num_classes, **kwargs)
    cfg = _config(LoopConfig, args)
    res = fit(model, task, cfg, desc=f"train {args.model} on {task.name}")
    acc = evaluate(model, task)
    print(f"{args.model} on {task.name}: test accuracy {acc:.4f} after {res.steps} steps")
    if res.stopped:
        print(f"warning: {res.stopped}", file=sys.stderr)
    save(model, args.out, {"task": task.name, "metrics": {"accuracy": acc}, "train": cfg.to_dict(), "stopped": res.stopped})
    print(f"saved {args.out}")
    return 0


def cmd_lock(args) -> int:
    from .. import tasks
    from ..api import carried_meta, certified
    from ..io.artifacts import load, save
    from ..locks import lock_factory
    from ..locks.specdef import SpecDefLock, SpecDefLockConfig

    model, meta = load(args.model_dir)
    retain_name = args.retain_task or meta.get("task")
    if args.spec:
        lock = lock_factory(args.spec)
    elif not retain_name:
        raise SystemExit("error: the model records no task; pass --retain-task")
    else:
        lock = SpecDefLock(_config(SpecDefLockConfig, args))
    retain = tasks.get(retain_name) if retain_name else None
    locked, record = certified(model, lock, retain, progress=True)
    report = getattr(lock, "last_report", None)
    if report is not None:
        s0, s1 = report.sigma_before, report.sigma_after
        print(f"mean top-{report.config['top_k']} sigma {s0['mean_topk']:.4g} -> {s1['mean_topk']:.4g}; "
              f"max sigma {s0['max_sigma']:.4g} -> {s1['max_sigma']:.4g}")
        if report.stopped:
            print(f"warning: {report.stopped}", file=sys.stderr)
    for c in record["certificates"]:
        print(f"{c['lock']}: {c['invariant']}: measured {c['measured']:.6g} {c['relation']} required "
              f"{c['required']:.6g}: {'holds' if c['holds'] else 'FAILS'}")
    out = carried_meta(meta, base=str(args.model_dir), **record)
    cons = record.get("conservation")
    if cons is not None:
        acc = cons["accuracy"]
        out.update(task=retain_name, metrics={"accuracy": acc["modified"]})
        print(f"retain task {retain_name}: accuracy {acc['original']:.4f} -> {acc['modified']:.4f} "
              f"(drop {acc['drop']:.4f}); KL {cons['kl']['mean']:.4g}, TV {cons['tv']['mean']:.4g} "
              f"<= Pinsker {cons['tv']['pinsker_bound']:.4g}")
    save(locked, args.out, out)
    print(f"saved {args.out}  (check it with: trainlock verify {args.out})")
    _write_json(args.json, {**record, **({"report": report.summary()} if report is not None else {})})
    return 0


def cmd_attack(args) -> int:
    from .. import tasks
    from ..api import attack
    from ..io.artifacts import load, save
    from ..attacks import FineTuneConfig

    model, meta = load(args.model_dir)
    cfg = _config(FineTuneConfig, args)
    res = attack(model, cfg, tasks.get(args.task), progress=True)
    reached = f"{res.steps_to_target} steps" if res.steps_to_target is not None else "not reached"
    print(f"attack {cfg.optimizer} lr={cfg.lr:g} on {res.task}: accuracy {res.accuracy:.4f} after {res.steps} steps; "
          f"per epoch {[round(a, 4) for a in res.curve]}; target {cfg.target_accuracy:g}: {reached}")
    if res.diverged:
        print(f"diverged: {res.diverged}", file=sys.stderr)
    if args.save:
        save(res.model, args.save, {"task": res.task, "metrics": {"accuracy": res.accuracy}, "attack": res.to_dict()})
    _write_json(args.json, res.to_dict())
    return 0


def cmd_eval(args) -> int:
    from .. import tasks
    from ..train.loop import evaluate

    model, meta, name = _load_with_task(args)
    acc = evaluate(model, tasks.get(name))
    print(f"{args.model_dir} on {name}: accuracy {acc:.4f}")
    _write_json(args.json, {"accuracy": acc, "task": name})
    return 0


def cmd_redteam(args) -> int:
    from .. import tasks
    from ..io.artifacts import load
    from ..redteam import RedTeamConfig, redteam

    model, meta = load(args.model_dir)
    base = load(args.base)[0] if args.base else None
    retain_name = args.retain_task or meta.get("task")
    retain = tasks.get(retain_name) if retain_name else None
    cfg = RedTeamConfig(budget=args.budget, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
                        workers=args.workers, seed=args.seed, target_accuracy=args.target_accuracy,
                        search_trials=args.search_trials, include=tuple(args.include or ()),
                        optimizers=tuple(args.optimizers or ()), transforms=tuple(args.transforms or ()),
                        lrs=tuple(args.lrs or ()), device=args.device)
    out = Path(args.out or f"runs/redteam-{Path(args.model_dir).name}-{args.task.replace(':', '_').replace('/', '_')}")
    res = redteam(model, tasks.get(args.task), out=out, config=cfg, retain=retain, base=base, progress=True,
                  locks=meta.get("locks"))
    w = res["worst"]
    if w is None:
        print("no run completed; see the report")
    else:
        steps = "not reached" if w["steps_to_target"] is None else w["steps_to_target"]
        print(f"worst case: {w['attack']} -> accuracy {w['accuracy']:.4f} on {args.task} (steps to target: {steps})")
    if res.get("base_worst"):
        print(f"unlocked base, same suite: {res['base_worst']['attack']} -> {res['base_worst']['accuracy']:.4f}")
    c = res["comparison"]
    print(f"an adaptive attack beats every plain optimizer: {'yes' if c['adaptive_beats_every_plain'] else 'no'}")
    print(f"report: {out / 'report.md'}  rows: {out / 'runs.jsonl'}")
    _write_json(args.json, {"worst": w, "comparison": c, "base_worst": res.get("base_worst"), "runs": res["runs"]})
    return 0


def cmd_relearn(args) -> int:
    from .. import tasks
    from ..api import lock
    from ..attacks.relearn import RelearnConfig, relearning_study
    from ..locks import SpecDefConfig

    model, meta, name = _load_with_task(args)
    cfg = _config(RelearnConfig, args)
    lock_cfg = SpecDefConfig(alpha=args.lock_alpha, top_k=args.lock_top_k, lr=args.lock_lr, epochs=args.lock_epochs,
                             device=args.device)
    rows = relearning_study(model, tasks.get(name), cfg, lambda m, t: lock(m, lock_cfg, t, progress=True), progress=True)
    n = len(rows[0]["per_class"])
    print(f"{'stage':<36}" + "".join(f"{c:>7}" for c in range(n)) + f"{'others':>8}")
    for r in rows:
        print(f"{r['name']:<36}" + "".join(f"{a:>7.3f}" for a in r["per_class"]) + f"{r['retain_accuracy']:>8.3f}")
    _write_json(args.json, {"task": name, "config": cfg.to_dict(), "lock": lock_cfg.to_dict(), "rows": rows})
    return 0


def cmd_reproduce(args) -> int:
    from ..paper.reproduce import run

    res = run(args.figure, Path(args.out or f"runs/{args.figure}"), quick=args.quick)
    print(f"{args.figure}: {len(res['rows'])} rows -> {args.out or f'runs/{args.figure}'} "
          f"(results.json, table.md, {', '.join(res['plots'])})")
    return 0


def cmd_diagnose(args) -> int:
    from .. import tasks
    from ..io.artifacts import load
    from ..analysis.diagnostics import diagnose, format_table, plot_diagnostics, to_json

    model, meta, name = _load_with_task(args)
    task = tasks.get(name)
    results = {}
    if args.base:
        results["base"] = diagnose(load(args.base)[0], task, n=args.samples)
    results["locked" if args.base else "model"] = diagnose(model, task, n=args.samples)
    print(format_table(results))
    out = Path(args.out or f"runs/diagnose-{Path(args.model_dir).name}")
    print(f"plots: {plot_diagnostics(results, out / 'diagnostics.png')}")
    _write_json(args.json, to_json(results))
    return 0


def cmd_compact(args) -> int:
    from .. import tasks
    from ..analysis.compact import compaction_report, regularization_path

    model, meta, name = _load_with_task(args)
    task = tasks.get(name)
    path = regularization_path(model, task, lambdas=args.lambdas, steps=args.steps, lr=args.lr,
                               batch_size=args.batch_size, seed=args.seed)
    print("regularization path: SGD on CE + lambda ||theta||^2; bound sqrt(C/lambda), C = end objective")
    print(f"{'lambda':>10} {'||theta||':>10} {'bound':>10} {'holds':>6} {'accuracy':>9}")
    for r in path:
        print(f"{r['lambda']:>10.3g} {r['norm']:>10.4f} {r['bound']:>10.4f} {'yes' if r['holds'] else 'NO':>6} "
              f"{r['accuracy']:>9.4f}")
    rep = compaction_report(model, task)
    print(f"\npruning / quantization (base accuracy {rep['base_accuracy']:.4f})")
    print(f"{'transform':<20} {'accuracy':>9}  detail")
    for r in rep["prune"]:
        print(f"{'prune ' + format(r['fraction'], 'g'):<20} {r['accuracy']:>9.4f}  sparsity {r['sparsity']:.4f}")
    for r in rep["quantize"]:
        print(f"{'quantize ' + str(r['bits']) + ' bits':<20} {r['accuracy']:>9.4f}  "
              f"max distinct values per tensor {r['max_levels']}")
    _write_json(args.json, {"task": name, "path": path, "report": rep})
    return 0


def cmd_demo(args) -> int:
    from ..paper.demo import run

    run(quick=args.quick, out=args.out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from ..attacks import FineTuneConfig
    from ..locks import SpecDefConfig
    from ..train.loop import LoopConfig

    p = argparse.ArgumentParser(
        prog="trainlock", description="Lock models against unauthorized fine-tuning, and attack the lock.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    s = sub.add_parser("tasks", help="list tasks and whether their data is installed")
    s.set_defaults(fn=cmd_tasks)

    s = sub.add_parser("train", help="train a base model on a task", description="Train a built-in model and save it.")
    s.add_argument("--task", required=True, help="task name, npz:PATH or idx:DIR")
    s.add_argument("--model", default="cnn", help="mlp, cnn, resnet18, transformer (default: cnn)")
    s.add_argument("--model-kwargs", default=None, help='JSON of size options, e.g. \'{"hidden": [64]}\'')
    s.add_argument("--out", required=True, help="model directory to write")
    _add_config_flags(s, LoopConfig, skip=("snapshot_every",))
    s.set_defaults(fn=cmd_train, optimizer="adadelta", lr=1.0, epochs=2, lr_gamma=0.7)

    s = sub.add_parser("lock", help="lock a saved model (SpecDef by default, any lock with --spec)",
                       description="SpecDef: loss = alpha*retain - (1-alpha)*mean(top-k sigma of every weight).")
    s.add_argument("model_dir", help="model directory (from train)")
    s.add_argument("--out", required=True, help="model directory to write the locked model to")
    s.add_argument("--retain-task", default=None, help="task the lock must keep (default: the model's own task)")
    s.add_argument("--json", default=None, help="write the lock report (history, sigma before/after) here")
    s.add_argument("--spec", default=None, metavar="FILE|JSON",
                   help="build the lock from a JSON / YAML spec file or inline JSON ({\"type\": NAME, ...config}, "
                        "or a list of them: all must hold); lock types: specdef, specdef-reparam, frozen, "
                        "spectral-cap, sparsity, energy, architecture, composite; replaces the SpecDef flags")
    _add_config_flags(s, SpecDefConfig)
    s.set_defaults(fn=cmd_lock)

    s = sub.add_parser("attack", help="fine-tune a saved model on an unauthorized task",
                       description="Fine-tune a copy of the model on TASK and report how fast it learns.")
    s.add_argument("model_dir", help="model directory (base or locked)")
    s.add_argument("--task", required=True, help="the unauthorized task")
    s.add_argument("--json", default=None, help='write {"accuracy", "curve", "steps_to_target", ...} here')
    s.add_argument("--save", default=None, help="also save the fine-tuned model to this directory")
    _add_config_flags(s, FineTuneConfig)
    s.set_defaults(fn=cmd_attack)

    s = sub.add_parser("eval", help="test accuracy of a saved model", formatter_class=fmt)
    s.add_argument("model_dir")
    s.add_argument("--task", default=None, help="task (default: the model's own task)")
    s.add_argument("--json", default=None, help='write {"accuracy": ...} here')
    s.set_defaults(fn=cmd_eval)

    s = sub.add_parser("redteam", help="run the attack suite against a model; worst case first", formatter_class=fmt,
                       description="Plain optimizers over a learning-rate grid, adaptive weight-space transforms, "
                                   "reparametrizations and backdoor data against MODEL_DIR on TASK. Resumable: rerun "
                                   "the same command after an interruption and finished runs are kept.")
    s.add_argument("model_dir", help="model directory (the locked model)")
    s.add_argument("--task", required=True, help="the unauthorized task")
    s.add_argument("--budget", type=int, default=None, help="at most this many runs, in the suite's priority order")
    s.add_argument("--out", default=None, help="results directory (default runs/redteam-MODEL-TASK)")
    s.add_argument("--base", default=None, help="unlocked base model directory: run the same suite on it too")
    s.add_argument("--retain-task", default=None, help="authorized task (default: the model's own)")
    s.add_argument("--workers", type=int, default=2, help="process pool size (0: in this process)")
    s.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per run")
    s.add_argument("--max-steps", type=int, default=None, help="cap on fine-tuning steps per run")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--target-accuracy", type=float, default=0.7, help="accuracy that defines steps_to_target")
    s.add_argument("--search-trials", type=int, default=0, help="Optuna trials after the suite (resumable)")
    s.add_argument("--include", nargs="*", default=None, help="run only attacks whose name contains one of these")
    s.add_argument("--optimizers", nargs="*", default=None, help="only these optimizers (default: every registered one)")
    s.add_argument("--transforms", nargs="*", default=None, help="only these transforms (default: every registered one)")
    s.add_argument("--lrs", nargs="*", type=float, default=None,
                   help="one learning-rate grid for every optimizer, e.g. 1e-8 1e-7 1e-6 1e-5 1e-4 1e-3 (paper Fig. 3)")
    s.add_argument("--device", default="cpu", help="cpu, or cuda (runs then go one at a time)")
    s.add_argument("--json", default=None, help='write {"worst": ..., "runs": [...]} here')
    s.set_defaults(fn=cmd_redteam)

    s = sub.add_parser("relearn", help="unlearn a class, lock, relearn: per-class accuracy at every stage",
                       description="The paper's forgetting study: continue training MODEL_DIR without one class "
                                   "(unlearning), lock the result with SpecDef on the remaining classes, then relearn "
                                   "with SGD on the full task; prints per-class test accuracy after each stage.")
    from ..attacks.relearn import RelearnConfig

    s.add_argument("model_dir", help="the trained base model")
    s.add_argument("--task", default=None, help="task (default: the model's own)")
    s.add_argument("--lock-alpha", type=float, default=0.5, help="SpecDef alpha (default 0.5)")
    s.add_argument("--lock-top-k", type=int, default=1, help="SpecDef top_k (default 1)")
    s.add_argument("--lock-lr", type=float, default=5.0, help="SpecDef Adadelta lr (default 5, as the demo)")
    s.add_argument("--lock-epochs", type=int, default=5, help="SpecDef epochs (default 5, as the demo)")
    s.add_argument("--json", default=None, help="write the rows here")
    _add_config_flags(s, RelearnConfig)
    s.set_defaults(fn=cmd_relearn)

    s = sub.add_parser("reproduce", help="reproduce the paper's Figure 1 (quadratic) or Figure 2 (Theorems 2.1, 2.2)",
                       formatter_class=fmt,
                       description="Writes results.json, table.md and PNGs. fig1: steps to converge vs kappa for GD "
                                   "and Nesterov, measured beside theory. fig2: Appendix B.1's MLP, CNN and "
                                   "Transformer with the output layer's sigma_max scaled (Adam iterations, Theorem "
                                   "2.1 bound ratios: paper form, Remark A.3 top-k form, range-restricted form; "
                                   "'inf' = vacuous), then each Transformer weight W_Q/W_K/W_V/W_O/W_1/W_2 scaled "
                                   "in turn (Theorem 2.2: iterations, lambda_max, bound ratios where a block can "
                                   "be bounded).")
    s.add_argument("figure", choices=["fig1", "fig2"],
                   help="fig1: GD/Nesterov on quadratics; fig2: small nets (Theorem 2.1) "
                        "and each Transformer weight scaled in turn (Theorem 2.2)")
    s.add_argument("--out", default=None, help="output directory (default: runs/FIGURE)")
    s.add_argument("--quick", action="store_true",
                   help="fewer kappas / scales / iterations (fig1: seconds; fig2: about a minute)")
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("diagnose", help="per-layer Jacobian spectra, locking severity, gradient bottleneck bound",
                       formatter_class=fmt,
                       description="Split the model into blocks; per block: Jacobian spectral norm, sigma_min, "
                                   "rank, condition number, locking severity 1 - sigma_min/sigma_max, parameter-"
                                   "gradient norm; and check the chain-rule bound on the first block's gradient.")
    s.add_argument("model_dir", help="model directory (e.g. the locked model)")
    s.add_argument("--task", default=None, help="task for the batch (default: the model's own task)")
    s.add_argument("--base", default=None, help="unlocked base model directory: shown side by side")
    s.add_argument("--out", default=None, help="plot directory (default runs/diagnose-<name>)")
    s.add_argument("--json", default=None, help="write the full results here")
    s.add_argument("--samples", type=int, default=64, help="test samples in the batch")
    s.set_defaults(fn=cmd_diagnose)

    s = sub.add_parser("compact", help="regularization path with its sublevel-set bound; pruning/quantization accuracy",
                       formatter_class=fmt,
                       description="Per lambda, train a copy with plain SGD on CE + lambda ||theta||^2 and check "
                                   "||theta|| <= sqrt(C/lambda), C = the objective at the end; then the test "
                                   "accuracy after magnitude pruning (50/80/90%%) and quantization (8/4/2 bits).")
    s.add_argument("model_dir", help="model directory")
    s.add_argument("--task", default=None, help="task (default: the model's own task)")
    s.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2, 1e-1], help="penalty strengths")
    s.add_argument("--steps", type=int, default=100, help="SGD steps per lambda")
    s.add_argument("--lr", type=float, default=0.05, help="SGD learning rate")
    s.add_argument("--batch-size", dest="batch_size", type=int, default=64, help="minibatch size")
    s.add_argument("--seed", type=int, default=0, help="data-order seed")
    s.add_argument("--json", default=None, help="write the path and the report here")
    s.set_defaults(fn=cmd_compact)

    s = sub.add_parser("demo", help="train, lock and attack on MNIST -> Fashion-MNIST; print the table",
                       formatter_class=fmt)
    s.add_argument("--quick", action="store_true", help="small subsets: under two minutes on 2 CPU cores")
    s.add_argument("--out", default="runs/demo", help="where to write results.json and curves.png")
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("verify", help="check a model directory's weights, metadata and certificates",
                       formatter_class=fmt,
                       description="Re-hash every tensor, compare the safetensors header with trainlock.json, "
                                   "re-certify every recorded lock from the weights, and re-check a conservation "
                                   "certificate. Exit 0 when every check holds, 1 when one fails, 2 on unreadable "
                                   "input.")
    s.add_argument("model_dir", help="model directory")
    s.add_argument("--json", default=None, help='write {"ok", "rows": [...]} here')
    s.set_defaults(fn=cmd_verify)
    return p


def cmd_verify(args) -> int:
    from ..certify.verify import verify

    report = verify(args.model_dir)
    print(report.table())
    _write_json(args.json, report.to_dict())
    return 0 if report.ok else 1


def main(argv: list[str] | None = None) -> int:
    from ..io.artifacts import ArtifactError
    from ..registry import UnknownNameError
    from ..tasks import TaskDataError

    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ArtifactError, TaskDataError, UnknownNameError, ValueError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
