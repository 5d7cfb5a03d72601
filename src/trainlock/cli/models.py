"""Commands about data and models: tasks, train, eval."""

from __future__ import annotations

import json
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
    int_type,
    load_with_task,
    subset_task,
    write_json,
    writing,
)

logger = logging.getLogger(__name__)


def _train_defaults():
    from ..train import LoopConfig

    # the paper trains its base models with Adadelta at lr 1, step-LR 0.7 per epoch
    return LoopConfig(optimizer="adadelta", lr=1.0, epochs=2, lr_gamma=0.7)


def cmd_tasks(args) -> int:
    from .. import tasks

    rows = tasks.available()
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        mark = "yes" if r["present"] else f"no   install: {r['install_hint']}"
        print(f"{r['name']:<{width}}  {r['description']:<34}  present: {mark}")
    from ..tasks import FORMS

    print(f"\nalso: {FORMS}")
    return 0


def add_train(p) -> None:
    from ..train import LoopConfig

    p.add_argument("--task", required=True, help="task name, npz:PATH or idx:DIR")
    p.add_argument(
        "--model",
        default="cnn",
        help="mlp, cnn, resnet18, transformer (images); minilm-l6, smollm2-135m, hf:DIR (text) (default: cnn)",
    )
    p.add_argument("--model-kwargs", default=None, help="JSON of size options, e.g. '{\"hidden\": [64]}'")
    p.add_argument(
        "--max-length",
        type=int_type(1),
        default=None,
        help="text models: tokens per input, longer texts are cut (default: 128)",
    )
    p.add_argument("--out", required=True, help="model directory to write")
    p.add_argument("--overwrite", action="store_true", help="replace a model already in --out")
    add_subset_flags(p)
    add_checkpoint_flags(p)
    add_config_flags(p, LoopConfig, _train_defaults())


def cmd_train(args) -> int:
    from .. import models, tasks
    from ..io.artifacts import save
    from ..train import LoopConfig, LoopHooks, evaluate, fit

    check_output_dir(args.out, overwrite=args.overwrite)
    cfg = config_from_args(LoopConfig, args, _train_defaults())
    checkpoint = checkpoint_for(args, args.out)
    task = subset_task(tasks.get(args.task), args)
    kwargs = model_kwargs(args)
    import torch

    torch.manual_seed(cfg.seed)  # the initial weights too follow --seed
    if args.max_length is not None:
        kwargs["max_length"] = args.max_length
    try:
        model = models.build(
            args.model, input_shape=getattr(task, "input_shape", None), num_classes=task.num_classes, **kwargs
        )
    except ValueError as e:  # a size option the model refuses: say it came from --model-kwargs
        if any(f"{k} " in str(e) or f"'{k}'" in str(e) for k in kwargs if k != "max_length"):
            raise ValueError(f"--model-kwargs: {e}") from None
        raise
    res = fit(model, task, cfg, hooks=LoopHooks(checkpoint=checkpoint), desc=f"train {args.model} on {task.name}")
    acc = evaluate(model, task)
    print(f"{args.model} on {task.name}: test accuracy {acc:.4f} after {res.steps} steps")
    if res.stopped:
        logger.warning(res.stopped)
    with writing(args.out):
        save(
            model,
            args.out,
            {"task": task.name, "metrics": {"accuracy": acc}, "train": cfg.to_dict(), "stopped": res.stopped},
        )
    done_with(checkpoint)
    print(f"saved {args.out}")
    return 0


def model_kwargs(args) -> dict:
    """--model-kwargs as a dict, refused (one line naming the flag) unless it is a JSON object of size options
    that the task and the other flags do not set already."""
    if not args.model_kwargs:
        return {}
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON ({e}): {args.model_kwargs!r}") from None
    if not isinstance(kwargs, dict):
        raise ValueError(f"--model-kwargs must be a JSON object, got {args.model_kwargs!r}")
    for key in ("input_shape", "num_classes"):
        if key in kwargs:
            raise ValueError(f"--model-kwargs: {key} comes from the task; remove it from --model-kwargs")
    if "max_length" in kwargs and args.max_length is not None and kwargs["max_length"] != args.max_length:
        raise ValueError(
            f"--model-kwargs sets max_length {kwargs['max_length']!r} and --max-length {args.max_length}; give one"
        )
    return kwargs


def add_eval(p) -> None:
    p.add_argument("model_dir")
    p.add_argument("--task", default=None, help="task (default: the model's own task)")
    p.add_argument("--json", default=None, help='write {"accuracy": ...} here')
    p.add_argument(
        "--test-samples",
        type=int_type(1),
        default=None,
        metavar="N",
        help="evaluate on a seeded subset of N test samples (default: all)",
    )


def cmd_eval(args) -> int:
    from .. import tasks
    from ..train import evaluate

    check_output_file(args.json)
    model, _meta, name = load_with_task(args)
    acc = evaluate(model, subset_task(tasks.get(name), args))
    print(f"{args.model_dir} on {name}: accuracy {acc:.4f}")
    write_json(args.json, {"accuracy": acc, "task": name})
    return 0


FETCH_DESCRIPTION = (
    "Fetch data that no pip package installs, once, into a local cache; later runs read the "
    "cache and never touch the network. bigbench: pip-downloads the bigbench 1.0.0 source package "
    "(358 MB; needs setuptools and wheel) and extracts only the named tasks' benchmark_tasks/ "
    "directories into $TRAINLOCK_DATA/bigbench (default ~/.cache/trainlock/bigbench)."
)


def add_fetch(p) -> None:
    from ..tasks.bigbench import DEFAULT_TASKS

    p.add_argument("source", choices=["bigbench"], help="what to fetch")
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(DEFAULT_TASKS),
        metavar="TASK",
        help=f"BIG-bench task directories to extract (default: {' '.join(DEFAULT_TASKS)}); load one "
        f"later as bigbench:TASK",
    )
    p.add_argument("--sdist", default=None, help="extract from this bigbench-1.0.0.tar.gz instead of downloading it")


def cmd_fetch(args) -> int:
    from ..tasks import bigbench

    hold_output(bigbench.cache_dir())  # two fetches at once would extract over each other
    for d in bigbench.fetch(tuple(args.tasks), args.sdist):
        print(f"extracted {d}")
    return 0


COMMANDS = [
    ("tasks", "list tasks and whether their data is installed", None, None, cmd_tasks),
    (
        "fetch",
        "fetch data no pip package installs (BIG-bench tasks), once, into a local cache",
        FETCH_DESCRIPTION,
        add_fetch,
        cmd_fetch,
    ),
    ("train", "train a base model on a task", "Train a built-in model and save it.", add_train, cmd_train),
    ("eval", "test accuracy of a saved model", None, add_eval, cmd_eval),
]
