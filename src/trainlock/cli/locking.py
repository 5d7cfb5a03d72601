"""Commands that make and check locks: lock, verify."""

from __future__ import annotations

import logging

from .common import (
    add_checkpoint_flags,
    add_config_flags,
    add_subset_flags,
    check_output_dir,
    check_output_file,
    checkpoint_for,
    config_from_args,
    done_with,
    hold_output,
    subset_task,
    write_json,
    writing,
)

logger = logging.getLogger(__name__)

LOCK_DESCRIPTION = """\
SpecDef by default: loss = alpha * retain_loss - (1 - alpha) * mean(top-k sigma of every weight), on
the model's own task (or --retain-task), with the flags below. --spec builds any registered lock
instead (`trainlock locks` lists them; a plugin's with --plugin) from a JSON / YAML file or inline JSON,
and then the SpecDef flags are ignored. The locked model is saved
with its certificates (what the lock claims, measured from the weights) and, with a retain task, its
conservation certificate (accuracy drop, KL, Pinsker bound); check it later with `trainlock verify`."""


def add_lock(p) -> None:
    from ..locks import LOCKS, SpecDefConfig

    p.add_argument("model_dir", help="model directory (from train)")
    p.add_argument("--out", required=True, help="model directory to write the locked model to")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    add_checkpoint_flags(p)
    p.add_argument("--retain-task", default=None, help="task the lock must keep (default: the model's own task)")
    p.add_argument("--json", default=None, help="write the lock record and report (history, sigma before/after) here")
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE|JSON",
        help='build the lock from a JSON / YAML spec file or inline JSON ({"type": NAME, ...config}, '
        "or a list of them: all must hold); lock types: " + ", ".join(LOCKS.names()),
    )
    add_subset_flags(p)
    p.add_argument(
        "--fsdp",
        action="store_true",
        help="under torchrun: shard the parameters with FSDP2 (for a model that does not fit one device; "
        "the spectral term reads each weight unsharded); default: data parallel, full copies",
    )
    add_config_flags(p, SpecDefConfig)


def cmd_lock(args) -> int:
    from .. import tasks
    from ..api import carried_meta, lock
    from ..io.artifacts import load, save
    from ..locks import SpecDefConfig

    check_output_dir(args.out, [args.model_dir], args.overwrite)
    check_output_file(args.json)
    model, meta = load(args.model_dir)
    retain_name = args.retain_task or meta.get("task")
    if not args.spec and not retain_name:
        raise ValueError("the model records no task; pass --retain-task")
    spec = args.spec or config_from_args(SpecDefConfig, args)
    if args.fsdp:
        import os

        os.environ["TRAINLOCK_FSDP"] = "1"  # read by train.distributed.fsdp_requested (a no-op outside torchrun)
    checkpoint = checkpoint_for(args, args.out)
    retain = subset_task(tasks.get(retain_name), args) if retain_name else None
    res = lock(model, spec, retain=retain, progress=True, checkpoint=checkpoint)
    report, record = res.report, res.record
    if report is not None:
        s0, s1 = report.sigma_before, report.sigma_after
        if s0 and s1 and "top_k" in report.config:  # spectral locks; the others report no spectrum
            print(
                f"mean top-{report.config['top_k']} sigma {s0['mean_topk']:.4g} -> {s1['mean_topk']:.4g}; "
                f"max sigma {s0['max_sigma']:.4g} -> {s1['max_sigma']:.4g}"
            )
        if report.steps:
            print(
                f"{report.steps} locking steps in {report.loop_s:.1f} s ({report.steps / max(report.loop_s, 1e-9):.2f} "
                f"steps/s, per-epoch evaluations included; before/after evaluations and certificates not)"
            )
        if report.stopped:
            logger.warning(report.stopped)
    for c in record["certificates"]:
        print(
            f"{c['lock']}: {c['invariant']}: measured {c['measured']:.6g} {c['relation']} required "
            f"{c['required']:.6g}: {'holds' if c['holds'] else 'FAILS'}"
        )
    # the base by path and by weights: `attack --base` / `redteam --base` refuse any other model as this lock's base
    base_state = (meta.get("hashes") or {}).get("state")
    out = carried_meta(meta, base=str(args.model_dir), base_state_sha256=base_state, **record)
    cons = record.get("conservation")
    if cons is not None:
        acc = cons["accuracy"]
        out.update(task=retain_name, metrics={"accuracy": acc["modified"]})
        print(
            f"retain task {retain_name} ({cons['n_samples']:,} test samples): accuracy {acc['original']:.4f} -> "
            f"{acc['modified']:.4f} "
            f"(drop {acc['drop']:.4f}); KL {cons['kl']['mean']:.4g}, TV {cons['tv']['mean']:.4g} "
            f"<= Pinsker {cons['tv']['pinsker_bound']:.4g}"
        )
    with writing(args.out):
        save(res.model, args.out, out)
    done_with(checkpoint)
    print(f"saved {args.out}  (check it with: trainlock verify {args.out})")
    write_json(
        args.json,
        {
            **{k: v for k, v in record.items() if k != "lock"},
            **({"report": report.summary()} if report is not None else {}),
        },
    )
    return 0


def add_verify(p) -> None:
    p.add_argument("model_dir", help="model directory")
    p.add_argument(
        "--public-key",
        default=None,
        metavar="PUB.pem",
        help="also check the directory's signature (model.sig, from `trainlock sign`) with this key: "
        "signer, time, and every file added, removed or changed since signing",
    )
    p.add_argument("--json", default=None, help='write {"ok", "rows": [...]} here')


def cmd_verify(args) -> int:
    from ..certify.verify import verify

    check_output_file(args.json)
    report = verify(args.model_dir, public_key=args.public_key)
    print(report.table())
    write_json(args.json, report.to_dict())
    return 0 if report.ok else 1


RELEASE_DESCRIPTION = (
    "Write what a model owner publishes: the same weights, the architecture, the certificates "
    "and the lock entries a third party re-checks with `trainlock verify`, and nothing that helps "
    "an attacker (no pre-lock spectrum, no lock history, no retain-task curve, no base path, no "
    "per-layer drift). MODEL_DIR, the owner's copy with the private record, is left as it is. The copy "
    "is also a model card (README.md: what the lock claims, its certificates, the label names and, with "
    "--redteam DIR, the red team's summary), bound to the weights like every claim; files are world-readable."
)


def add_release(p) -> None:
    p.add_argument("model_dir", help="the owner's locked model directory (kept as it is)")
    p.add_argument("--out", required=True, help="directory to write the public copy to")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    p.add_argument(
        "--redteam",
        default=None,
        metavar="DIR",
        help="a `trainlock redteam` results directory of this model: its summary (worst case, best reference, "
        "uplift, base uplift, budget, date) goes into the model card README.md and the bound record",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        metavar="NAME",
        help="the class names, in label order, for the model card (and config.json's id2label for a Hugging "
        "Face model); default: the task's names for a text model, else the class indices",
    )


def cmd_release(args) -> int:
    from ..atomic import exclusive
    from ..io.release import release

    check_output_dir(args.out, [args.model_dir] + ([args.redteam] if args.redteam else []), args.overwrite)
    with exclusive(args.out):
        path, meta = release(args.model_dir, args.out, redteam=args.redteam, labels=args.labels)
    dropped = meta["release"]["dropped"]
    print(
        f"wrote the public copy {path}: the same weights, architecture, certificates and lock entries; left out: "
        f"{', '.join(dropped) or 'nothing private was there'}; model card {path / 'README.md'}"
        + ("" if args.redteam else " (no red-team summary: --redteam DIR adds it)")
    )
    print(f"check it with: trainlock verify {path}   (sign it with: trainlock sign {path} --key PRIVATE.pem)")
    return 0


def add_keygen(p) -> None:
    p.add_argument("--out", required=True, help="directory for private.pem and public.pem")
    p.add_argument("--overwrite", action="store_true", help="replace keys already there")


def cmd_keygen(args) -> int:
    from ..io.signing import fingerprint, keygen

    hold_output(args.out)  # two keygens into one directory: the second refused at once
    private, public = keygen(args.out, overwrite=args.overwrite)
    print(f"wrote {private} (keep it secret; mode 0600) and {public}")
    print(f"public key fingerprint {fingerprint(public.read_bytes())}")
    return 0


def add_sign(p) -> None:
    p.add_argument("model_dir", help="model directory to sign (every file in it)")
    p.add_argument("--key", required=True, metavar="PRIVATE.pem", help="private key (from trainlock keygen)")


def cmd_sign(args) -> int:
    from ..io.artifacts import check_binding
    from ..io.signing import SIGNED_INFO, sign

    hold_output(args.model_dir)  # nothing else writes the directory while its files are hashed and signed
    check_binding(args.model_dir, unverified=False)  # a signature must not vouch for claims that no longer hold
    path = sign(args.model_dir, args.key)
    print(
        f"signed {args.model_dir}: {path} (signer and time in {SIGNED_INFO}); check it with: trainlock verify "
        f"{args.model_dir} --public-key PUBLIC.pem"
    )
    return 0


VERIFY_DESCRIPTION = (
    "Re-hash every tensor, compare the safetensors header with trainlock.json, re-certify every "
    "recorded lock from the weights, and re-check a conservation certificate. Exit 0 when every "
    "check holds, 1 when one fails, 2 on unreadable input."
)

KEYGEN_DESCRIPTION = (
    "Write DIR/private.pem (PKCS#8, mode 0600) and DIR/public.pem: a P-256 key pair for "
    "`trainlock sign` and `trainlock verify --public-key`. Works offline."
)
SIGN_DESCRIPTION = (
    "Sign every file of MODEL_DIR with the OpenSSF model-signing library (elliptic-curve key, offline): "
    "writes trainlock.sig.json (signer fingerprint, time, file hashes) and model.sig. Anyone with "
    "the public key can then check that no file was added, removed or changed."
)

TUNE_DESCRIPTION = """\
Search a lock's hyper-parameters against the red team (Optuna, two objectives): each trial locks a copy of
MODEL_DIR, measures authorized utility on --retain-task, then runs the first --budget runs of the red-team
suite on --attack-task and reads the uplift over the best reference attacker (best accuracy from the locked
weights minus the best of the matched runs from scratch and the classical reference). Maximize utility, minimize
uplift; the front scores every trial against the study's best reference run. Writes pareto.json, pareto.png, trial-N/
(each lock and its red-team rows) and chosen/ (the Pareto trial with least uplift among those within
--utility-floor of the base's utility). Resumable: the study is SQLite in --out (or --storage URL); a rerun
adds only the missing trials. Tune on a task you will not report: --report-tasks names those, and tuning on
one is refused."""


def add_tune(p) -> None:
    from ..tune import TuneConfig

    p.add_argument("model_dir", help="the unlocked model directory")
    p.add_argument("--retain-task", default=None, help="authorized task (default: the model's own task)")
    p.add_argument("--attack-task", required=True, help="the unauthorized task the red team tunes against")
    p.add_argument(
        "--report-tasks",
        nargs="*",
        default=[],
        metavar="TASK",
        help="held-back tasks the final numbers will be reported on (refused as --attack-task)",
    )
    p.add_argument("--out", default=None, help="study directory (default: runs/tune-MODEL-LOCK)")
    p.add_argument("--json", default=None, help="write the Pareto front and the chosen trial here")
    add_subset_flags(p)
    add_config_flags(p, TuneConfig)


def cmd_tune(args) -> int:
    from pathlib import Path

    from .. import tasks
    from ..atomic import exclusive
    from ..io.artifacts import load
    from ..tune import TuneConfig, tune

    cfg = config_from_args(TuneConfig, args)
    out = Path(args.out or f"runs/tune-{Path(args.model_dir).name}-{cfg.lock}")
    check_output_dir(out, [args.model_dir], overwrite=True)  # an existing study is resumed
    check_output_file(args.json)
    model, meta = load(args.model_dir)
    retain_name = args.retain_task or meta.get("task")
    if not retain_name:
        raise ValueError(f"{args.model_dir} names no task; pass --retain-task")
    with exclusive(out):
        res = tune(
            model,
            subset_task(tasks.get(retain_name), args),
            subset_task(tasks.get(args.attack_task), args),
            cfg,
            out=out,
            report_tasks=tuple(args.report_tasks),
            progress=True,
        )
    print(f"base utility on {res['retain_task']}: {res['base_utility']:.4f}; tuned against {res['tuning_task']}")
    if res["reference_best"] is not None:
        print(f"uplift: the trial's worst case minus the study's best reference ({res['reference_best']:.4f})")
    print(f"{'trial':>5} {'utility':>8} {'uplift':>10}  params")
    for t in sorted(res["pareto"], key=lambda t: -t["utility"]):
        mark = " <- chosen" if res["chosen"] and t["number"] == res["chosen"]["number"] else ""
        print(f"{t['number']:>5} {t['utility']:>8.4f} {t['uplift']:>+10.4f}  {t['params']}{mark}")
    write_json(args.json, {k: v for k, v in res.items() if k != "trials"})
    if not res["trials"]:  # every trial pruned: nothing to choose, no plot
        print(
            f"0 trials finished -> {out} (pareto.json only): every trial was pruned, its red-team subset had no "
            f"finished run from the locked weights or no reference; raise --budget (12 holds the suite's coverage "
            f"stage, locked and from scratch)"
        )
        return 1
    print(
        f"{len(res['trials'])} trials, {len(res['pareto'])} on the Pareto front -> {out} (pareto.json, pareto.png"
        f"{', chosen/' if res['chosen'] else ''})"
    )
    return 0


LOCKS_DESCRIPTION = """\
Without flags: the registered lock types. With --run: the honest lock table. Every lock in --specs (a JSON
file or inline JSON object {row name: lock spec, or null for the unlocked base}) locks MODEL_DIR on
--retain-task, then the same red-team subset runs on each --attack-tasks task (tasks not used to tune any
lock); per lock: utility vs base, lock time, and per task the worst case, the best from scratch, the
uplift over the best reference attacker, and the fewest steps to come within 2 points of the base's best (cost to bypass).
Written to --out/table.json (resumable); --table DIR prints a table already written.

--frontier: the utility-uplift frontier. With --run, every spec is first swept over its lock's main dial (specdef:
alpha 0.9 0.5 0.1, spectral-cap: max_sigma, sparsity: fraction, ...; rows NAME@FIELD=VALUE; a spec that sets its
dial stays one point, a dial given as a list sweeps those values; composites and locks without a dial stay one
point) and the unlocked base is added as row "none"; then the table is built and read back as points: utility
against the worst-case uplift over the held-back tasks (min..max over --seeds), the Pareto set, and the goal
check: uplift <= 2 points on every task where the base's uplift is >= 10 points, at utility >= the base's - 1
point (else the nearest point and its distance). A randomized lock (undo's noise, fresh-distill's start) is a
different model at each locking: --lock-seeds 1 2 3 locks it once per seed and scores its point by the worst draw.
Writes --out/frontier.json and frontier.png and prints it. With --table DIR it redraws from DIR/table.json (into
DIR, or --out). Example:
  trainlock locks --run runs/base --retain-task mnist --attack-tasks fashion-mnist \\
      --specs '{"specdef": {"type": "specdef"}, "cap": {"type": "spectral-cap", "max_sigma": [4, 2, 1]}}' \\
      --frontier --budget 14 --seeds 0 1 2 --out runs/frontier
  trainlock locks --table runs/frontier --frontier"""


def add_locks(p) -> None:
    from ..tune.table import TableConfig

    p.add_argument("--table", default=None, metavar="DIR", help="print the lock table in DIR/table.json")
    p.add_argument("--run", default=None, metavar="MODEL_DIR", help="build the lock table for this unlocked model")
    p.add_argument("--specs", default=None, metavar="FILE|JSON", help="{row name: lock spec or null} (with --run)")
    p.add_argument("--retain-task", default=None, help="authorized task (default: the model's own)")
    p.add_argument("--attack-tasks", nargs="+", default=[], metavar="TASK", help="held-back unauthorized tasks")
    p.add_argument("--out", default=None, help="results directory (default: runs/locks-MODEL)")
    p.add_argument(
        "--frontier",
        action="store_true",
        help="the utility-uplift frontier: with --run, sweep each spec over its lock's main dial first; with --run "
        "or --table, write frontier.json and frontier.png (Pareto set, goal check) and print it",
    )
    p.add_argument(
        "--lock-seeds",
        nargs="+",
        type=int,
        default=[],
        metavar="S",
        help="with --frontier: lock each point of a randomized lock (undo, fresh-distill: a spec without its own "
        "seed) once per seed, as rows NAME#lock-seed=S, and score the point by its worst draw (lowest utility, "
        "highest uplift); other locks are one draw. The red team's seeds are --seeds",
    )
    add_subset_flags(p)
    add_config_flags(p, TableConfig)


def cmd_locks(args) -> int:
    import json
    from pathlib import Path

    from ..tune.table import format_table

    if args.lock_seeds and not (args.frontier and args.run):
        raise ValueError("--lock-seeds goes with --frontier --run MODEL_DIR (it adds rows before the table is built)")
    if args.frontier and not (args.table or args.run):
        raise ValueError(
            "--frontier needs --run MODEL_DIR --specs ... --attack-tasks ... (sweep and build the table) or "
            "--table DIR (redraw from DIR/table.json)"
        )
    if args.table:
        path = Path(args.table) / "table.json"
        if not path.is_file():
            raise ValueError(f"--table: {path} does not exist; build it with trainlock locks --run MODEL_DIR ...")
        try:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"--table: {path} is not valid JSON ({e})") from None
        if not isinstance(data, dict) or not {"attack_tasks", "rows", "base_utility"} <= set(data):
            raise ValueError(
                f"--table: {path} is not a lock table (a JSON object with attack_tasks, rows and base_utility, as "
                f"trainlock locks --run writes it)"
            )
        try:
            if not args.frontier:
                print(format_table(data))
                return 0
            from ..tune.frontier import format_frontier, frontier

            res = frontier(data)
            text = format_frontier(res)
        except (KeyError, TypeError, IndexError, AttributeError, ValueError) as e:
            raise ValueError(f"--table: {path} is not a complete lock table ({type(e).__name__}: {e})") from None
        return _frontier_out(res, text, Path(args.out or args.table))
    if not args.run:
        import sys

        from ..locks import LOCKS

        for name in LOCKS.names():
            cls = LOCKS.get(name)
            doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
            origin = LOCKS.origin(name)
            print(f"{name:<16} {doc[0] if doc else ''}" + (f"  [plugin: {origin}]" if origin else ""))
        return 0
    from .. import tasks
    from ..atomic import exclusive
    from ..io.artifacts import load
    from ..tune.table import TableConfig, lock_table

    if not args.specs or not args.attack_tasks:
        raise ValueError("--run needs --specs and --attack-tasks")
    inline = args.specs.lstrip().startswith(("{", "["))
    if not inline and not Path(args.specs).is_file():
        raise ValueError(f"--specs: no file {args.specs!r} (give a JSON file or an inline JSON object)")
    text = args.specs if inline else Path(args.specs).read_text(encoding="utf-8-sig")
    try:
        specs = json.loads(text)
    except json.JSONDecodeError as e:
        where = "inline JSON" if inline else args.specs
        raise ValueError(f"--specs: {where} is not valid JSON ({e})") from None
    if not isinstance(specs, dict):
        raise ValueError("--specs must be a JSON object {row name: lock spec or null}")
    if args.frontier:
        from ..tune.frontier import expand

        notes: list[str] = []
        given = len(specs)
        try:
            specs = expand(specs, notes=notes, lock_seeds=tuple(args.lock_seeds))
        except ValueError as e:
            raise ValueError(f"--specs: {e}") from None
        if not any(v is None for v in specs.values()):
            if "none" in specs:
                raise ValueError("--specs: a row is called 'none' but is not the base (null); rename it")
            specs = {"none": None, **specs}  # the base's red team runs anyway: its row costs nothing more
        for line in notes:
            print(f"frontier: {line}")
        print(f"frontier: {given} specs -> {len(specs)} rows: {', '.join(specs)}")
    cfg = config_from_args(TableConfig, args)
    out = Path(args.out or f"runs/locks-{Path(args.run).name}")
    check_output_dir(out, [args.run], overwrite=True)  # and its lock, before any work
    model, meta = load(args.run)
    retain_name = args.retain_task or meta.get("task")
    with exclusive(out):
        res = lock_table(
            model,
            subset_task(tasks.get(retain_name), args),
            [subset_task(tasks.get(t), args) for t in args.attack_tasks],
            specs,
            out,
            cfg,
            progress=True,
        )
    print(format_table(res))
    print(f"-> {out / 'table.json'}")
    if args.frontier:
        from ..tune.frontier import format_frontier, frontier

        fr = frontier(res)
        return _frontier_out(fr, format_frontier(fr), out)
    return 0


def _frontier_out(res: dict, text: str, out) -> int:
    from ..tune.frontier import save_frontier

    print(text, end="")
    paths = save_frontier(res, out)
    print(f"-> {paths[0]}, {paths[1]}")
    return 0


COMMANDS = [
    ("lock", "lock a saved model (SpecDef by default, any lock with --spec)", LOCK_DESCRIPTION, add_lock, cmd_lock),
    (
        "verify",
        "check a model directory's weights, metadata, certificates (and signature)",
        VERIFY_DESCRIPTION,
        add_verify,
        cmd_verify,
    ),
    (
        "release",
        "write the public copy of a locked model (no private lock record)",
        RELEASE_DESCRIPTION,
        add_release,
        cmd_release,
    ),
    ("keygen", "write an elliptic-curve key pair for signing releases", KEYGEN_DESCRIPTION, add_keygen, cmd_keygen),
    ("sign", "sign every file of a model directory with a private key", SIGN_DESCRIPTION, add_sign, cmd_sign),
    (
        "locks",
        "list lock types, or build / print the honest lock table (every lock through one red team)",
        LOCKS_DESCRIPTION,
        add_locks,
        cmd_locks,
    ),
    (
        "tune",
        "search a lock's hyper-parameters against the red team's worst case (Pareto front)",
        TUNE_DESCRIPTION,
        add_tune,
        cmd_tune,
    ),
]
