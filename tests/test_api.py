"""The one lock API: `tl.lock(model, lock, retain)` for every way of naming a lock, returning a LockResult."""

import dataclasses

import pytest
import torch

import trainlock as tl
from trainlock.api import LockResult
from trainlock.certify.verify import verify
from trainlock.locks import LOCKS, Lock, SpecDefConfig, SpecDefLock, register_lock, specdef_loop

FAST = SpecDefConfig(loop=specdef_loop(max_steps=4, batch_size=32, device="cpu"))


@pytest.fixture(scope="module")
def small(digits):
    torch.manual_seed(0)
    return tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])


def test_config_lock_returns_model_record_and_report(small, digits):
    before = [p.clone() for p in small.parameters()]
    res = tl.lock(small, FAST, retain=digits)
    assert isinstance(res, LockResult)
    assert any(not torch.equal(p, q) for p, q in zip(res.model.parameters(), small.parameters(), strict=False))
    assert all(torch.equal(p, q) for p, q in zip(before, small.parameters(), strict=False))  # input untouched
    assert [e["type"] for e in res.record["locks"]] == ["specdef"]
    assert res.record["certificates"][0]["holds"] and res.record["conservation"]["accuracy"]["original"] > 0
    assert res.report.sigma_after["mean_topk"] > res.report.sigma_before["mean_topk"]
    assert res.record["lock"]["sigma_after"] == res.report.sigma_after  # what save() stores as meta["lock"]


def test_every_way_of_naming_a_lock_gives_the_same_lock(small, digits):
    spec = {"type": "specdef", **FAST.to_dict()}
    ways = [FAST, SpecDefLock(FAST), spec, [spec]]
    records = [tl.lock(small, w, retain=digits).record for w in ways]
    sigmas = [r["certificates"][0]["details"]["recorded"] for r in records]
    assert all(s == sigmas[0] for s in sigmas)
    assert [r["locks"][0]["type"] for r in records] == ["specdef", "specdef", "specdef", "composite"]


def test_a_lock_name_builds_it_with_its_defaults(small, digits):
    res = tl.lock(small, "architecture")
    assert res.report is None and res.record["certificates"][0]["holds"] and "conservation" not in res.record
    with pytest.raises(tl.registry.UnknownNameError, match="valid: architecture"):
        tl.lock(small, "no-such-lock")


def test_retain_by_name_and_bad_arguments(small):
    res = tl.lock(small, FAST, retain="digits")
    assert res.record["lock"]["retain_task"] == "digits"
    with pytest.raises(ValueError, match="needs the retain"):
        tl.lock(small, FAST)
    with pytest.raises(ValueError, match="lock must be"):
        tl.lock(small, 3.5)
    with pytest.raises(ValueError, match="retain must be a Task or a task name"):
        tl.lock(small, FAST, retain=7)


def test_the_users_config_is_never_written_to(small, digits):
    cfg = dataclasses.replace(FAST)
    before = cfg.to_dict()
    lk = SpecDefLock(cfg)
    assert lk.cfg is not cfg  # the lock holds its own copy
    res = tl.lock(small, lk, retain=digits)
    assert cfg.to_dict() == before
    assert lk.config() == before and dataclasses.asdict(lk.cfg) == dataclasses.asdict(cfg)  # nothing measured in it
    (entry,) = res.record["locks"]
    assert entry["config"] == before and set(entry["record"]) == {"recorded_sigma_max"}
    assert entry["record"]["recorded_sigma_max"] == res.record["certificates"][0]["details"]["recorded"]
    frozen_cfg = tl.locks.frozen.FrozenConfig(names=("body",))
    kept = dataclasses.asdict(frozen_cfg)
    res = tl.lock(small, tl.locks.frozen.FrozenLock(frozen_cfg))
    assert dataclasses.asdict(frozen_cfg) == kept and not hasattr(frozen_cfg, "hashes")
    assert set(res.record["locks"][0]["record"]["hashes"]) == {"body.0.weight", "body.0.bias"}
    assert not hasattr(res.model, "trainlock_lock")


def test_any_registered_locks_config_dataclass_is_a_lock(small, digits):
    frozen_cfg = tl.locks.frozen.FrozenConfig(names=("bias",))
    res = tl.lock(small, frozen_cfg)
    assert res.report is None and res.record["locks"][0] == {
        "type": "frozen",
        "config": {"names": ["bias"]},
        "record": {"hashes": res.record["locks"][0]["record"]["hashes"]},
    }
    assert all(c["holds"] for c in res.record["certificates"]) and frozen_cfg.names == ("bias",)

    @dataclasses.dataclass
    class NotALockConfig:
        x: int = 1

    with pytest.raises(ValueError, match="not the config of a registered lock"):
        tl.lock(small, NotALockConfig())


def test_saved_record_verifies(small, digits, tmp_path):
    res = tl.lock(small, FAST, retain=digits)
    tl.save(res.model, tmp_path, {"task": "digits", **res.record})
    report = verify(tmp_path)
    assert report.ok, report.table()


OWN_LOCKS = [n for n in LOCKS.names() if LOCKS.get(n).__module__.startswith("trainlock.")]  # not test-only locks


@pytest.mark.parametrize("name", OWN_LOCKS)
def test_every_registered_lock_meets_the_protocol_and_registers_once(name):
    cls = LOCKS.get(name)
    assert cls.name == name  # registered under its own name, written once on the class
    assert dataclasses.is_dataclass(cls.config_cls) and dataclasses.is_dataclass(cls.record_cls)
    assert cls.example is not None  # the shared contract test (tests/locks/test_lock_types.py) builds it
    lock = cls.from_config(cls.example)
    assert isinstance(lock, Lock) and isinstance(lock.cfg, cls.config_cls)
    assert lock.use_tasks() is lock
    for gone in ("report", "progress", "checkpoint"):  # run state lives in what apply returns, not on the lock
        assert not hasattr(lock, gone), gone
    kept = (cls.name, cls.config_cls, cls.example)
    with pytest.raises(ValueError, match="already registered"):
        register_lock(name, cls.config_cls)(cls)
    assert LOCKS.get(name) is cls and (cls.name, cls.config_cls, cls.example) == kept  # a refused one changes nothing


def test_register_lock_checks_its_arguments():
    with pytest.raises(TypeError, match="register_lock"):
        register_lock(SpecDefConfig)

    class NoCertify:
        def apply(self, model, retain=None):
            return model

    with pytest.raises(TypeError, match="certify"):
        register_lock("test-api-no-certify", SpecDefConfig)(NoCertify)
    assert "test-api-no-certify" not in LOCKS
