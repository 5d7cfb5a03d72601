"""Budgeted adaptive search with Optuna (TPE) over optimizer, log learning rate, transform, head.

The study lives in SQLite (out/optuna.db) and every finished run in out/runs.jsonl, so a killed
search restarts where it stopped: finished trials are counted from the study, and a trial whose
spec already has a row reuses it instead of training again.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch
import torch.nn as nn

from ..attacks.transforms import TRANSFORMS
from ..optimizers import OPTIMIZERS
from ..tasks import Task
from .row import append_row, migrate, read_rows
from .runner import RESULTS, Target, run_spec
from .spec import AttackSpec, RedTeamConfig


def check_storage(url: str | None, flag: str = "--storage") -> None:
    """Refuse, before any work, an Optuna storage URL that cannot work: one that does not parse, names an unknown
    database scheme or a driver that is not installed, or (SQLite) a file that is not a database or cannot be
    created. Other databases are not connected to here (a server may be down only for now)."""
    if url is None:
        return
    import sqlite3

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        raise ValueError(
            f"{flag} {url!r} is not a database URL ({e}); e.g. sqlite:///study.db or postgresql+psycopg://USER@HOST/DB"
        ) from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ValueError(
            f"{flag} {url!r}: unknown database scheme {parsed.drivername!r} (e.g. sqlite, postgresql+psycopg, "
            f"mysql+pymysql)"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise ValueError(f"{flag} {url!r}: the {parsed.drivername} driver is not installed ({e})") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    path = Path(parsed.database)
    if path.is_dir():
        raise ValueError(f"{flag} {url!r}: {path} is a directory, not an SQLite file")
    if path.exists():
        try:
            con = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
            try:
                con.execute("PRAGMA schema_version").fetchone()
            finally:
                con.close()
        except sqlite3.Error as e:
            raise ValueError(f"{flag} {url!r}: {path} is not a readable SQLite database ({e})") from None
    elif not path.parent.is_dir():
        raise ValueError(f"{flag} {url!r}: the directory {path.parent} does not exist")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {url!r}: cannot create {path} (permission denied)")


def open_study(optuna, tries: int = 5, **kwargs):
    """`optuna.create_study(load_if_exists=True, ...)`, retried: workers starting together on a fresh database all
    try to create its tables (and the study); the losers of that race see an integrity error, then succeed."""
    for attempt in range(tries):
        try:
            return optuna.create_study(load_if_exists=True, **kwargs)
        except Exception as e:
            if attempt == tries - 1 or type(e).__name__ not in (
                "IntegrityError",
                "OperationalError",
                "DuplicatedStudyError",
            ):
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def search(
    model: nn.Module,
    task: Task,
    cfg: RedTeamConfig,
    out: Path | None,
    retain: Task | None = None,
    progress: bool = False,
) -> list[dict]:
    """Run `cfg.search_trials` trials in all (finished ones included); returns the search's rows."""
    try:
        import optuna
    except ImportError:
        raise ImportError("the adaptive search needs Optuna: pip install 'trainlock[redteam]'") from None
    if not progress:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage, name = cfg.storage, "redteam"
    cache: dict[str, dict] = {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        storage = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
        cache = {r["key"]: r for r in read_rows(out / RESULTS)}
    if cfg.storage:  # a shared database holds many studies: name this one by the model and task it attacks
        from ..io.hashing import state_hashes

        name = f"redteam-{state_hashes(model)['state'][:12]}-{getattr(task, 'name', 'task')}"
    study = open_study(
        optuna,
        study_name=name,
        storage=storage,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=cfg.loop.seed),
    )
    done = (optuna.trial.TrialState.COMPLETE,)
    finished = study.get_trials(deepcopy=False, states=done)
    # a trial's row: this directory's copy, else the one the trial carries (it may have run on another machine;
    # an older version's row is migrated as a results file's would be)
    rows = [cache.get(t.user_attrs.get("key")) or t.user_attrs.get("row") for t in finished]
    rows = [r if r.get("key") in cache else migrate(r) for r in rows if r is not None]

    def objective(trial: optuna.Trial) -> float:
        transform = trial.suggest_categorical("transform", ["none", *TRANSFORMS.names()])
        spec = AttackSpec.of(
            trial.suggest_categorical("optimizer", OPTIMIZERS.names()),
            trial.suggest_float("lr", 1e-5, 1.0, log=True),
            transforms=() if transform == "none" else ((transform, {}),),
            head=trial.suggest_categorical("head", ["auto", "reset"]),
            epochs=cfg.loop.epochs,
            max_steps=cfg.loop.max_steps,
            batch_size=cfg.loop.batch_size,
            seed=cfg.loop.seed,
            target_accuracy=cfg.target_accuracy,
            schedule=cfg.loop.schedule,
        )
        trial.set_user_attr("key", spec.key())
        row = cache.get(spec.key())
        if row is None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # the same numbers as the pool's runs
            try:
                run = run_spec(Target(model, task, retain), spec)
            finally:
                torch.set_num_threads(threads)
            run.search, run.trial = True, trial.number  # the number is unique in the study, whichever machine ran it
            row = append_row(out / RESULTS, run) if out is not None else run.to_dict()
            trial.set_user_attr("row", row)
            cache[spec.key()] = row
        rows.append(row)
        return float(row.get("accuracy") or 0.0)

    remaining = max(0, cfg.search_trials - len(finished))
    if remaining:  # on a shared study, every worker stops once the study as a whole holds enough trials
        stop = optuna.study.MaxTrialsCallback(cfg.search_trials, states=(*done, optuna.trial.TrialState.RUNNING))
        study.optimize(objective, n_trials=remaining, callbacks=[stop])
    return rows
