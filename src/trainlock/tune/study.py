"""Tune a lock's hyper-parameters against the red team's worst case (Optuna, two objectives).

Each trial locks a copy of the model with hyper-parameters drawn from the lock type's search space (`SPACES`:
specdef, sophon, repnoise, immunize, spectral-cap, sparsity), measures authorized utility (test accuracy on
the retain task), then runs a red-team subset of `budget` runs on the attack task and reads the attacker's
uplift over the best reference attacker (the best blind accuracy from the locked weights minus the best of the
suite's matched runs from scratch and the classical reference, on the same data). Objectives: utility (maximize)
and uplift (minimize). The Pareto front and the chosen trial score every trial against the study's best
reference (`common_reference`). The study lives in SQLite
(out/tune.db) or any Optuna RDB URL, so a killed study resumes; every trial's lock and red-team rows stay
under out/trial-N/.

The attack task used to tune must not be one you report final numbers on: a lock tuned against a task
is fitted to it. `tune` records the tuning task, and `report_tasks` in the output names the ones it
must not be judged on.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..api import lock
from ..atomic import write_text
from ..config import check_float, check_int, option, to_dict
from ..io.artifacts import save
from ..locks import LOCKS, SPACES
from ..red_team import RedTeamConfig, RunnerConfig, redteam
from ..red_team.search import open_study
from ..tasks import Task, for_model
from ..train import LoopConfig, evaluate
from . import spaces  # noqa: F401  (registers the built-in search spaces)

logger = logging.getLogger(__name__)


@dataclass
class TuneConfig:
    """The study and the red-team subset each trial runs."""

    lock: str = option("specdef", "lock type whose hyper-parameters are searched", choices=lambda: SPACES.names())
    trials: int = option(8, "trials in all (finished ones count: a rerun adds only what is missing)")
    budget: int = option(
        12,
        "red-team runs per trial, in the staged suite's order: 12 holds its whole coverage "
        "stage (adam and sgd at 1e-4, 1e-3, 1e-2 on the locked weights and from scratch); more "
        "adds the other optimizers' probes and the adaptive transforms",
    )
    optimizers: tuple[str, ...] = option(
        factory=tuple, help="only these optimizers in the red-team subset (default: every registered one)"
    )
    steps: int = option(100, "optimizer steps per red-team run")
    batch_size: int = option(64, "red-team minibatch size")
    utility_floor: float = option(
        0.01,
        "the chosen lock: least uplift among trials within this much of the "
        "base's utility (else the most useful trial)",
    )
    storage: str | None = option(None, "Optuna storage URL (default: SQLite in the output directory)")
    seed: int = option(0, "sampler seed")
    runner: RunnerConfig = option(factory=RunnerConfig, help="where the red-team runs execute", flat=True)
    device: str = option("cpu", "cpu or cuda")

    def __post_init__(self):
        for name in ("trials", "budget", "steps", "batch_size"):
            check_int("tune", name, getattr(self, name), 1)
        check_int("tune", "seed", self.seed, 0)
        check_float("tune", "utility_floor", self.utility_floor, 0.0, 1.0)

    def to_dict(self) -> dict:
        return to_dict(self)


def _best_reference(trials: list[dict]) -> float | None:
    return max((t["reference"] for t in trials if t.get("reference") is not None), default=None)


def common_reference(trials: list[dict]) -> list[dict]:
    """Score every trial against the study's best reference run: the references do not depend on the lock (the
    architecture re-initialized, the classical models, the same data), and an attacker can use whichever setting any
    trial's red team found best. A trial's own scratch runs depend on the rates its probes chose, so its own uplift
    (kept as `uplift_own`; Optuna's objective during the study) mixes the lock with that luck. Idempotent."""
    best = _best_reference(trials)
    for t in trials:
        t.setdefault("uplift_own", t["uplift"])
        if best is not None and t.get("worst") is not None:
            t["uplift"] = t["worst"] - best
    return trials


def _pareto(trials: list[dict]) -> list[dict]:
    """Trials no other trial beats on both objectives (utility up, uplift down)."""

    def dominated(a, b):
        return (
            b["utility"] >= a["utility"]
            and b["uplift"] <= a["uplift"]
            and (b["utility"] > a["utility"] or b["uplift"] < a["uplift"])
        )

    return [a for a in trials if not any(dominated(a, b) for b in trials)]


def _choose(front: list[dict], base_utility: float, floor: float) -> dict | None:
    if not front:
        return None
    useful = [t for t in front if t["utility"] >= base_utility - floor]
    return min(useful, key=lambda t: t["uplift"]) if useful else max(front, key=lambda t: t["utility"])


def tune(
    model: nn.Module,
    retain: Task,
    attack: Task,
    cfg: TuneConfig | None = None,
    out: str | Path = "runs/tune",
    report_tasks: tuple[str, ...] = (),
    progress: bool = False,
) -> dict:
    """Run (or resume) the study; returns {"trials", "pareto", "chosen", "base_utility", ...} and writes
    out/pareto.json, out/pareto.png and out/chosen/ (the chosen locked model and its red-team report)."""
    try:
        import optuna
    except ImportError:
        raise ImportError("tune needs Optuna: pip install 'trainlock[redteam]'") from None
    cfg = cfg or TuneConfig()
    from ..red_team.search import check_storage

    check_storage(cfg.storage)  # a bad URL fails here, not after the first trial's work
    if cfg.lock not in SPACES:
        raise ValueError(
            f"no search space for lock {cfg.lock!r}; tunable: {', '.join(SPACES.names())} (a plugin's "
            f"lock needs --plugin, and its space registered with @register_space)"
        )
    from ..tasks.lookup import same_task

    clash = next((r for r in report_tasks if same_task(getattr(attack, "name", None), r)), None)
    if clash is not None:  # compared by resolved path: data/./x.npz is data/x.npz
        raise ValueError(
            f"the tuning task {attack.name!r} is also a report task ({clash!r}): tune on a task you will not report"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _claim_study(out, model, retain, attack, cfg)  # a study of another base, task or search is refused before work
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    retain = for_model(retain, model)
    base_utility = evaluate(model, retain)
    storage = cfg.storage or f"sqlite:///{(out / 'tune.db').resolve()}"
    study = open_study(
        optuna,
        study_name=f"tune-{cfg.lock}",
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True),
    )
    rt_cfg = RedTeamConfig(
        loop=LoopConfig(device=cfg.device, max_steps=cfg.steps, batch_size=cfg.batch_size, epochs=10**6),
        budget=cfg.budget,
        runner=cfg.runner,
        optimizers=tuple(cfg.optimizers),
    )

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        lock_cfg = SPACES.get(cfg.lock)(trial, model, attack)
        d = out / f"trial-{trial.number}"
        lk = LOCKS.get(cfg.lock)(lock_cfg).use_tasks(attack)  # a restricted-domain lock trains against the tuning task
        res = lock(model, lk, retain=retain)
        utility = evaluate(res.model, retain)
        rt = redteam(res.model, attack, rt_cfg, out=d / "redteam")
        adv = rt["uplift"]
        if adv is None or not math.isfinite(adv):
            raise optuna.TrialPruned("the red-team subset had no finished run from the weights or no reference")
        save(res.model, d / "model", {"task": retain.name, "metrics": {"accuracy": utility}, **res.record})
        trial.set_user_attr("lock_config", json.loads(json.dumps(to_dict(lock_cfg), default=str)))
        trial.set_user_attr("worst", rt["locked"]["accuracy"] if rt["locked"] else None)
        trial.set_user_attr("worst_attack", rt["locked"]["attack"] if rt["locked"] else None)
        trial.set_user_attr("scratch", rt["scratch"]["accuracy"] if rt["scratch"] else None)
        trial.set_user_attr("reference", rt["reference"]["accuracy"])
        trial.set_user_attr("reference_attacker", rt["reference"]["attacker"])
        logger.info("trial %d: utility %.4f, uplift %+.4f", trial.number, utility, adv)
        return utility, adv

    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    remaining = max(0, cfg.trials - len(done))
    if remaining:  # on a shared study (--storage URL), every worker stops once the study holds enough trials
        states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING)
        with _quiet_interrupt():  # Ctrl-C: the caller's one line, not Optuna's traceback of the trial it stopped
            study.optimize(
                objective, n_trials=remaining, callbacks=[optuna.study.MaxTrialsCallback(cfg.trials, states)]
            )
    trials = common_reference(
        [
            {"number": t.number, "utility": t.values[0], "uplift": t.values[1], "params": t.params, **t.user_attrs}
            for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE
        ]
    )
    front = _pareto(trials)
    chosen = _choose(front, base_utility, cfg.utility_floor)
    result = {
        "lock": cfg.lock,
        "retain_task": retain.name,
        "tuning_task": attack.name,
        "report_tasks": list(report_tasks),
        "base_utility": base_utility,
        "config": cfg.to_dict(),
        "reference_best": _best_reference(trials),
        "trials": trials,
        "pareto": front,
        "chosen": chosen,
    }
    write_text(out / "pareto.json", json.dumps(result, indent=2, default=str))
    src = None if chosen is None else out / f"trial-{chosen['number']}"
    if src is not None and not src.is_dir():
        logger.warning(
            "the chosen trial %d ran on another worker of the shared study: its model is in that "
            "worker's output directory",
            chosen["number"],
        )
    elif src is not None:
        dst = out / "chosen"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src / "model", dst / "model")
        shutil.copytree(src / "redteam", dst / "redteam")
    if trials:
        _plot(trials, front, chosen, base_utility, out / "pareto.png")
    result["plot"] = str(out / "pareto.png") if trials else None
    return result


STUDY_IDENTITY = "study.json"
_NOT_STUDY = ("trials", "storage", "device", "runner")  # more trials extend a study; where it runs is not what it is


def study_identity(model: nn.Module, retain: Task, attack: Task, cfg: TuneConfig) -> dict:
    """What a study's trials are about: the base's weights (state hash), the tasks, the lock and the search settings."""
    from ..io.hashing import state_hashes

    return {
        "base_state_sha256": state_hashes(model)["state"],
        "retain_task": getattr(retain, "name", None),
        "attack_task": getattr(attack, "name", None),
        **{f"--{k.replace('_', '-')}": v for k, v in to_dict(cfg).items() if k not in _NOT_STUDY},
    }


def _claim_study(out: Path, model: nn.Module, retain: Task, attack: Task, cfg: TuneConfig) -> None:
    """Resume `out` only when it is a study of this base, these tasks and this search; else refuse, naming
    what differs. A new study directory records its identity (`study.json`)."""
    ident = json.loads(json.dumps(study_identity(model, retain, attack, cfg), default=str))
    f = out / STUDY_IDENTITY
    if f.is_file():
        try:
            old = json.loads(f.read_text())
        except json.JSONDecodeError:
            old = {}
        diff = sorted(k for k in set(ident) | set(old) if old.get(k) != ident.get(k))
        if diff:
            what = "; ".join(f"{k}: {_short(old.get(k))} there, {_short(ident.get(k))} now" for k in diff[:3])
            raise ValueError(
                f"{out} holds a tune study of another {'base model' if 'base_state_sha256' in diff else 'setting'} "
                f"({what}); its trials would be reported as this one's. Choose another --out (or delete {out})"
            )
        return
    if any(out.glob("trial-*")) or (out / "tune.db").is_file() or (out / "pareto.json").is_file():
        raise ValueError(
            f"{out} holds a tune study without a record of which base it tuned ({STUDY_IDENTITY}); choose another "
            f"--out (or delete {out} to start over)"
        )
    write_text(f, json.dumps(ident, indent=2, sort_keys=True))


def _short(value) -> str:
    text = "unset" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 24 else text[:21] + "..."


class _DropInterrupted(logging.Filter):
    """Drops Optuna's report of a trial stopped by Ctrl-C (a warning with the KeyboardInterrupt's traceback, and
    its "failed with value None" line); every other record passes."""

    def __init__(self):
        super().__init__()
        self.interrupted = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info
        if exc and exc[0] is not None and issubclass(exc[0], KeyboardInterrupt):
            self.interrupted = True
            return False
        return not (self.interrupted and "failed with value" in record.getMessage())


@contextmanager
def _quiet_interrupt():
    log = logging.getLogger("optuna.study._optimize")
    f = _DropInterrupted()
    log.addFilter(f)
    try:
        yield
    finally:
        log.removeFilter(f)


def _plot(trials, front, chosen, base_utility, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import writing_file

    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter([t["utility"] for t in trials], [t["uplift"] for t in trials], c="0.6", label="trials")
    f = sorted(front, key=lambda t: t["utility"])
    ax.plot([t["utility"] for t in f], [t["uplift"] for t in f], "o-", color="C3", label="Pareto front")
    if chosen:
        ax.plot([chosen["utility"]], [chosen["uplift"]], "*", ms=16, color="C2", label="chosen")
    ax.axvline(base_utility, color="k", lw=0.8, ls="--", label="base utility")
    ax.axhline(0.0, color="k", lw=0.5)
    ax.set_xlabel("authorized utility (test accuracy, higher is better)")
    ax.set_ylabel("uplift over the best reference attacker (lower is better)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
