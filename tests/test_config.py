"""Configs: nested, round-trip through JSON, load version-0.1 flat JSON, carry their help text."""

import dataclasses
import json
from pathlib import Path

import pytest

import trainlock as tl
from trainlock.attacks.backdoor import BackdoorConfig
from trainlock.attacks.relearn import RelearnConfig
from trainlock.certify.verify import verify
from trainlock.config import from_dict, to_dict
from trainlock.io.artifacts import BindingError
from trainlock.locks import LOCKS, RecordedLock, SpecDefConfig, specdef_loop
from trainlock.locks.factory import lock_from_meta
from trainlock.optimizers import OPTIMIZERS
from trainlock.red_team import RedTeamConfig
from trainlock.train import LoopConfig

V01 = Path(__file__).parent / "data" / "v0.1"  # written by trainlock 0.1.0 (flat configs)
CONFIGS = [LoopConfig, tl.FineTuneConfig, SpecDefConfig, RedTeamConfig, RelearnConfig, BackdoorConfig]


def _all_configs():
    """The configs above, and every built-in lock's config and record dataclasses (both are saved)."""
    own = [LOCKS.get(n) for n in LOCKS.names() if LOCKS.get(n).__module__.startswith("trainlock.")]
    lock_cfgs = {c for cls in own for c in (cls.config_cls, cls.record_cls)}
    return CONFIGS + sorted(lock_cfgs - set(CONFIGS), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", CONFIGS)
def test_round_trip_through_json(cls):
    cfg = cls()
    again = from_dict(cls, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg


def test_nested_partial_dict_keeps_the_parents_loop_defaults():
    cfg = from_dict(SpecDefConfig, {"alpha": 0.3, "loop": {"lr": 5.0}})
    assert cfg.loop == specdef_loop(lr=5.0) and cfg.loop.optimizer == "adadelta" and cfg.alpha == 0.3
    flat = from_dict(SpecDefConfig, {"lr": 5.0, "epochs": 3})  # a hand-written flat spec
    assert flat.loop == specdef_loop(lr=5.0, epochs=3)


def test_unknown_keys_name_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['lrr'\].*'loop'"):
        from_dict(tl.FineTuneConfig, {"lrr": 1})
    with pytest.raises(ValueError, match=r"LoopConfig: unknown field\(s\) \['nope'\]"):
        from_dict(tl.FineTuneConfig, {"loop": {"nope": 1}})


def test_version_01_flat_configs_load():
    old = json.loads((V01 / "configs.json").read_text())
    assert old["version"] == "0.1.0" and "optimizer" in old["finetune"]  # really flat
    ft = from_dict(tl.FineTuneConfig, old["finetune"])
    assert ft.loop.optimizer == "sgd" and ft.loop.lr == 0.05 and ft.loop.epochs == 2 and ft.head == "reset"
    sd = from_dict(SpecDefConfig, old["specdef"])
    assert sd.alpha == 0.7 and sd.loop == specdef_loop(lr=5.0, epochs=5)
    assert from_dict(LoopConfig, old["loop"]) == specdef_loop()
    rt = from_dict(RedTeamConfig, old["redteam"])
    assert rt.budget == 7 and rt.loop.max_steps == 30 and rt.runner.workers == 0 and rt.lrs == (1e-3, 1e-2)


def test_version_01_locked_model_loads_and_verifies():
    with pytest.raises(BindingError, match="unverified"):  # 0.1 did not bind the claims: refused unless asked
        tl.load(V01 / "locked")
    model, meta = tl.load(V01 / "locked", unverified=True)
    assert meta["trainlock_version"] == "0.1.0" and "lr" in meta["locks"][0]["config"]  # the flat SpecDefLockConfig
    lock = lock_from_meta(meta)  # migrated on read: the measured sigma_max moves from the config to the record
    recorded = meta["locks"][0]["config"]["recorded_sigma_max"]
    assert isinstance(lock, RecordedLock) and lock.name == "specdef"
    assert lock.record.recorded_sigma_max == recorded and set(recorded) == {"body.0.weight", "head.weight"}
    assert "recorded_sigma_max" not in lock.lock.config() and lock.lock.cfg.loop.lr == 1.0  # flat 0.1 loop fields
    assert all(c.holds for c in lock.certify(model))
    assert lock.entry()["record"] == {"recorded_sigma_max": recorded}  # re-saved in today's format
    report = verify(V01 / "locked")
    (unbound,) = report.failures  # every check holds but one: 0.1 did not bind the claims to the weights
    assert unbound.check == "record" and "not bound" in unbound.reason and "0.1.0" in unbound.reason


@pytest.mark.parametrize("cls", _all_configs(), ids=lambda c: c.__name__)
def test_every_field_has_help(cls):
    missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
    assert missing == []


def test_optimizer_choices_come_from_the_registry():
    field = next(f for f in dataclasses.fields(LoopConfig) if f.name == "optimizer")
    assert list(field.metadata["choices"]()) == OPTIMIZERS.names() and len(OPTIMIZERS.names()) >= 15
