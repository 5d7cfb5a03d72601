"""Tune a lock's hyper-parameters against the red team's worst case (Optuna, two objectives): `study.tune`;
the search spaces (`spaces`, registered per lock with `trainlock.locks.register_space`); the lock table
(`table`)."""

from .study import TuneConfig, common_reference, tune

__all__ = ["TuneConfig", "common_reference", "tune"]
