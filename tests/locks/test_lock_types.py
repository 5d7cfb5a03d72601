"""Every registered lock meets one contract (built from its registered example, on a tiny transformer), and each
built-in lock does what its own module says."""

import copy
import dataclasses
import json

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.api import as_lock
from trainlock.config import from_dict
from trainlock.locks import LOCKS, Certificate, Lock, RecordedLock, lock_factory, lock_from_meta
from trainlock.locks.specdef_reparam import Compensated, restore_structure, structure_meta
from trainlock.registry import UnknownNameError
from trainlock.train import LoopConfig, fit

BUILTIN = {
    "architecture",
    "composite",
    "dlr",
    "energy",
    "fresh-distill",
    "frozen",
    "immunize",
    "repnoise",
    "sophon",
    "sparsity",
    "specdef",
    "specdef-reparam",
    "spectral-cap",
}
ENERGY = {"type": "energy", "bad_task": "digits-permuted-1", "delta": 0.5, "max_samples": 300}
FROZEN_HEAD_AND_ARCH = [{"type": "frozen", "names": [r"^head\."]}, {"type": "architecture"}]


def mlp(hidden=(16,)):
    return tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=list(hidden))


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = mlp()
    fit(model, digits, LoopConfig(optimizer="adam", lr=1e-2, epochs=3, batch_size=32, device="cpu"), progress=False)
    return model


@pytest.fixture(scope="module")
def transformer(digits):
    """The contract's model: the small transformer every registered lock's `example` is written for, one epoch on
    digits."""
    torch.manual_seed(0)
    model = tl.models.build("transformer", input_shape=digits.input_shape, num_classes=10, patch=4, dim=32)
    fit(model, digits, LoopConfig(optimizer="adam", lr=3e-3, epochs=1, batch_size=32, device="cpu"), progress=False)
    return model


def make(spec, bad=None) -> Lock:
    lock = lock_factory(copy.deepcopy(spec))
    if bad is not None:
        lock.use_tasks(bad)
    return lock


def locked_by(lock, model, retain=None) -> tuple[nn.Module, RecordedLock]:
    """apply, and the lock bound to the record apply returned."""
    out = lock.apply(model, retain)
    return out.model, RecordedLock(lock, out.record)


def train(model, task, optimizer="sgd", lr=1.0, steps=20):
    return fit(
        model,
        task,
        LoopConfig(optimizer=optimizer, lr=lr, max_steps=steps, batch_size=32, device="cpu"),
        progress=False,
    )


# ---------------------------------------------------------------- the contract every registered lock meets


def example(name: str) -> dict:
    """The registered example config of lock `name` (a copy); a lock registered without one fails here."""
    ex = LOCKS.get(name).example
    assert ex is not None, (
        f"lock {name!r} is registered without an example config: give register_lock(..., "
        f"example={{...}}) a config that works on the contract's tiny transformer"
    )
    assert isinstance(ex, dict), f"lock {name!r}: example must be a config dict, got {type(ex).__name__}"
    return copy.deepcopy(ex)


def contract_lock(name: str, bad) -> Lock:
    return LOCKS.get(name).from_config(example(name)).use_tasks(bad)


def untouched(model: nn.Module) -> tuple:
    """Everything of the input model a lock must leave alone: values, requires_grad, hooks, mode."""
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        {n: (len(m._forward_pre_hooks), len(m._forward_hooks)) for n, m in model.named_modules()},
        [n for n, m in model.named_modules() if m.training],
    )


def same_state(a: tuple, b: tuple) -> bool:
    return a[0].keys() == b[0].keys() and all(torch.equal(a[0][k], b[0][k]) for k in a[0]) and a[1:] == b[1:]


def settings(lock) -> list:
    """The lock's settings as `config()` and as its config dataclass, and its children's (a composite)."""
    return [
        (lock.name, lock.config(), dataclasses.asdict(lock.cfg)),
        *(s for child in getattr(lock, "children", ()) for s in settings(child)),
    ]


def claims(certs) -> list[tuple]:
    return [(c.lock, c.invariant, c.relation, c.required, c.holds) for c in certs]


def measured(certs) -> list[float]:
    return [c.measured for c in certs]


def test_every_builtin_type_is_registered_with_an_example():
    assert set(LOCKS.names()) >= BUILTIN
    for name in BUILTIN:
        example(name)


@pytest.mark.parametrize("name", LOCKS.names())
def test_each_lock_meets_the_contract(name, transformer, digits, digits_permuted):
    cls = LOCKS.get(name)
    assert cls.name == name and dataclasses.is_dataclass(cls.config_cls) and dataclasses.is_dataclass(cls.record_cls)
    lock = contract_lock(name, digits_permuted)
    assert isinstance(lock, Lock) and type(lock) is cls and lock.name == name
    assert isinstance(lock.cfg, cls.config_cls)
    before, config_before = untouched(transformer), settings(lock)

    res = tl.lock(transformer, lock, retain=digits)

    # a copy is locked; the input, and the lock's own config, are left alone
    assert res.model is not transformer
    assert same_state(untouched(transformer), before), "apply changed its input model"
    assert settings(lock) == config_before, "apply wrote into the lock's config"
    assert not hasattr(res.model, "trainlock_lock")
    # every certificate holds, survives JSON, and states its threat model
    certs = [Certificate.from_dict(c) for c in res.record["certificates"]]
    assert certs and all(c.holds for c in certs), [
        (c.lock, c.invariant, c.measured, c.relation, c.required) for c in certs
    ]
    assert any(c.lock == name for c in certs)
    for c, stored in zip(certs, res.record["certificates"], strict=True):
        assert stored["holds"] is True and json.loads(json.dumps(stored)) == stored
        assert c.threat_model in ("release-time", "training-time") and c.removal
    # the entry: type, the settings exactly as the lock holds them, and what apply measured
    (entry,) = res.record["locks"]
    assert entry["type"] == name and entry["config"] == lock.config()
    assert set(entry["config"]) == {f.name for f in dataclasses.fields(cls.config_cls)}
    assert lock.record_to_dict(lock.record_from_dict(entry["record"])) == entry["record"]
    assert entry.get("plugin") == LOCKS.origin(name)  # built-ins name no plugin
    # through JSON and lock_from_meta: the same lock, record, holds and measured values from the weights alone
    meta = json.loads(json.dumps({"locks": res.record["locks"]}))
    again = lock_from_meta(meta)
    assert isinstance(again, RecordedLock) and again.name == name and type(again.lock) is cls
    assert again.entry() == meta["locks"][0]
    again.lock.use_tasks(digits_permuted)
    recert = again.certify(res.model)
    assert claims(recert) == claims(certs)
    assert measured(recert) == pytest.approx(measured(certs), rel=1e-6, abs=1e-9)
    # an unknown config key fails, naming the valid ones
    for build in (cls.from_config, lambda c: lock_factory({"type": name, **c})):
        with pytest.raises(ValueError, match="no_such_key") as err:
            build({**example(name), "no_such_key": 1})
        assert "valid" in str(err.value)
        assert all(repr(f.name) in str(err.value) for f in dataclasses.fields(cls.config_cls)), str(err.value)


@pytest.mark.parametrize("name", LOCKS.names())
def test_lock_takes_each_locks_config_dataclass(name, transformer, digits, digits_permuted, monkeypatch):
    cls = LOCKS.get(name)
    cfg = from_dict(cls.config_cls, example(name))
    assert type(cfg) is cls.config_cls
    kept = dataclasses.asdict(cfg)
    lock = as_lock(cfg)
    assert type(lock) is cls and lock.cfg == cfg and lock.cfg is not cfg  # the lock holds its own copy
    # a bare config has no use_tasks: the permuted task is found by its name
    get = tl.tasks.get
    monkeypatch.setattr(
        tl.tasks, "get", lambda n, *a, **k: digits_permuted if n == digits_permuted.name else get(n, *a, **k)
    )
    res = tl.lock(transformer, cfg, retain=digits)
    (entry,) = res.record["locks"]
    assert entry["type"] == name and entry["config"] == cls.from_config(example(name)).config()
    assert res.record["certificates"] and all(c["holds"] for c in res.record["certificates"])
    assert dataclasses.asdict(cfg) == kept  # the caller's config is not written to


def legacy(entry: dict) -> dict:
    """An entry as written before records existed: what apply measured inside the config, no "record" (a
    composite's children each held their own)."""
    if entry["type"] == "composite":
        kids = [
            legacy({"type": spec["type"], "config": {k: v for k, v in spec.items() if k != "type"}, "record": rec})
            for spec, rec in zip(entry["config"]["locks"], entry["record"]["children"], strict=True)
        ]
        return {
            "type": "composite",
            "config": {**entry["config"], "locks": [{"type": k["type"], **k["config"]} for k in kids]},
        }
    return {"type": entry["type"], "config": {**entry["config"], **entry["record"]}}


@pytest.mark.parametrize("name", LOCKS.names())
def test_an_entry_written_before_records_still_certifies(name, transformer, digits, digits_permuted):
    res = tl.lock(transformer, contract_lock(name, digits_permuted), retain=digits)
    (entry,) = json.loads(json.dumps(res.record["locks"]))
    old = legacy(entry)
    assert "record" not in old
    again = lock_from_meta({"locks": [old]})  # the measured values move from the config to the record
    assert again.lock.config() == entry["config"]
    again.lock.use_tasks(digits_permuted)
    certs = [Certificate.from_dict(c) for c in res.record["certificates"]]
    recert = again.certify(res.model)
    assert claims(recert) == claims(certs) and all(c.holds for c in recert)
    assert measured(recert) == pytest.approx(measured(certs), rel=1e-6, abs=1e-9)


def test_legacy_entries_move_the_measured_values_into_the_record(trained):
    out = lock_factory({"type": "frozen", "names": ["bias"]}).apply(trained)
    again = lock_from_meta({"locks": [{"type": "frozen", "config": {"names": ["bias"], "hashes": out.record.hashes}}]})
    assert again.record.hashes == out.record.hashes and again.lock.config() == {"names": ["bias"]}
    assert all(c.holds for c in again.certify(out.model))
    with pytest.raises(ValueError, match="valid"):  # a key that is neither setting nor record still fails
        lock_from_meta({"locks": [{"type": "frozen", "config": {"names": ["bias"], "hashez": {}}}]})


# ---------------------------------------------------------------- specdef-reparam


def test_reparam_keeps_the_function_and_inflates_sigma():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8, dtype=torch.float64)
    model = mlp().double()
    lock = lock_factory({"type": "specdef-reparam"})  # factor 1e4, k 1, every Linear
    out = lock.apply(model)
    locked = out.model
    assert out.report is None and set(out.record.recorded) == {"body.0", "head"}
    assert "recorded" not in lock.config()  # measured values live in the record, not in the settings
    assert isinstance(locked.body[0], Compensated) and isinstance(locked.head, Compensated)
    with torch.no_grad():
        torch.testing.assert_close(locked(x), model(x), rtol=1e-4, atol=1e-8)
        for name, orig in (("body.0", model.body[0]), ("head", model.head)):
            w = dict(locked.named_modules())[name]
            growth = torch.linalg.matrix_norm(w.layer.weight, 2) / torch.linalg.matrix_norm(orig.weight, 2)
            assert growth == pytest.approx(1e4, rel=1e-6)
            torch.testing.assert_close(w.comp.weight @ w.layer.weight, orig.weight, rtol=0, atol=1e-10)
            assert not torch.allclose(w.layer.bias, orig.bias)  # the bias is moved through C: b~ = C^-1 b
    names = [n for n, _ in locked.named_parameters()]
    assert "body.0.layer.weight" in names and "body.0.comp.weight" in names and "head.comp.weight" in names
    assert all(c.holds for c in lock.certify(locked, out.record))


def test_reparam_float32_and_tall_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))  # out > in: C must stay invertible
    x = torch.randn(32, 4)
    locked = lock_factory({"type": "specdef-reparam", "factor": 100.0, "k": 2}).apply(model).model
    with torch.no_grad():
        torch.testing.assert_close(locked(x), model(x), rtol=1e-4, atol=1e-5)
    big = lock_factory({"type": "specdef-reparam"}).apply(model).model  # factor 1e4 in float32: error ~ 1e4 * eps
    with torch.no_grad():
        ref = model(x)
        assert float((big(x) - ref).abs().max()) < 1e-2 * float(ref.abs().max())


def test_reparam_structure_round_trip_and_fold(tmp_path):
    torch.manual_seed(0)
    lock = lock_factory({"type": "specdef-reparam", "layers": r"^body\."})
    locked, recorded = locked_by(lock, mlp())
    meta = json.loads(json.dumps(structure_meta(locked)))
    assert meta == {"wrappers": [{"name": "body.0", "in": 64, "out": 16, "bias": True}]}
    fresh = restore_structure(mlp(), meta)
    fresh.load_state_dict(locked.state_dict(), strict=True)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), locked(x))
    assert all(c.holds for c in recorded.certify(fresh))
    with pytest.raises(ValueError, match=r"expected nn.Linear"):
        restore_structure(mlp(hidden=[8]), meta)
    # folding C into W~ removes the lock at no cost: same function, certificate fails
    w = fresh.body[0]
    folded = nn.Linear(64, 16)
    with torch.no_grad():
        folded.weight.copy_(w.comp.weight @ w.layer.weight)
        folded.bias.copy_(w.comp.weight @ w.layer.bias)
        ref = fresh(x)
        fresh.body[0] = folded
        torch.testing.assert_close(fresh(x), ref, rtol=1e-3, atol=1e-4)
    structure = recorded.certify(fresh)[0]
    assert not structure.holds and structure.adversary_can_remove and "merge" in structure.removal


# ---------------------------------------------------------------- training-time locks


def test_frozen_survives_training_and_detects_one_element(trained, digits):
    lock = lock_factory({"type": "frozen", "names": [r"^body\."]})
    locked, recorded = locked_by(lock, trained)
    assert set(recorded.record.hashes) == {"body.0.weight", "body.0.bias"}
    assert lock.config() == {"names": [r"^body\."]}  # the hashes are in the record, not in the config
    assert not locked.body[0].weight.requires_grad and locked.head.weight.requires_grad
    train(locked, digits, optimizer="adam", lr=1e-2, steps=10)
    (cert,) = recorded.certify(locked)
    assert cert.holds and cert.measured == cert.required == 2
    with torch.no_grad():
        w = locked.body[0].weight
        w.view(-1)[7] = torch.nextafter(w.view(-1)[7], torch.tensor(float("inf")))  # one ulp, one element
    (cert,) = recorded.certify(locked)
    assert not cert.holds and cert.details["changed"] == ["body.0.weight"]


def test_spectral_cap_holds_under_big_sgd_steps(trained, digits):
    lock = lock_factory({"type": "spectral-cap", "max_sigma": 0.5})
    locked, recorded = locked_by(lock, trained)
    train(locked, digits, optimizer="sgd", lr=1.0, steps=20)
    (cert,) = recorded.certify(locked)
    assert cert.holds and cert.measured <= 0.5 * (1 + 1e-4)
    free = copy.deepcopy(trained)
    train(free, digits, optimizer="sgd", lr=1.0, steps=20)
    assert not recorded.certify(free)[0].holds  # the same run without the lock leaves the cap
    head = cert.details["layers"]["head.weight"]
    with torch.no_grad():
        locked.head.weight.mul_(10)
    (cert,) = recorded.certify(locked)
    assert not cert.holds and cert.measured == pytest.approx(10 * head, rel=1e-5)


def test_sparsity_keeps_zeros_through_training(trained, digits):
    lock = lock_factory({"type": "sparsity", "fraction": 0.7})
    locked, recorded = locked_by(lock, trained)
    zeros = {n: p == 0 for n, p in locked.named_parameters() if n.endswith("weight")}
    total = sum(z.numel() for z in zeros.values())
    assert recorded.record.max_nonzero == total - round(0.7 * total)
    assert "max_nonzero" not in lock.config()
    train(locked, digits, optimizer="adam", lr=1e-2, steps=20)
    for n, p in locked.named_parameters():
        if n in zeros:
            assert torch.all(p[zeros[n]] == 0), n
    (cert,) = recorded.certify(locked)
    assert cert.holds and cert.measured <= cert.required
    locked_k = lock_factory({"type": "sparsity", "k": 100}).apply(trained).model
    assert sum(int(torch.count_nonzero(p)) for n, p in locked_k.named_parameters() if n.endswith("weight")) == 100


def test_energy_records_the_barrier_and_refuses_without_one(trained, digits, digits_permuted):
    lock = make(ENERGY, digits_permuted)
    with pytest.raises(ValueError, match="retain"):
        lock.apply(trained)
    locked, recorded = locked_by(lock, trained, digits)
    rec = recorded.record
    assert rec.retain_task == "digits" and rec.bad_loss >= rec.auth_loss + 0.5
    assert lock.config() == {k: v for k, v in ENERGY.items() if k != "type"}  # nothing measured in the config
    (cert,) = recorded.certify(locked)
    assert cert.holds and cert.required == pytest.approx(rec.auth_loss + 0.5)
    assert cert.measured - cert.details["auth_loss_now"] >= 0.5
    untrained = make({**ENERGY, "delta": 5.0}, digits_permuted)
    with pytest.raises(ValueError, match="barrier does not hold"):
        untrained.apply(mlp(), digits)


def test_composite_all_and_any(trained):
    spec = {
        "type": "composite",
        "mode": "all",
        "locks": [{"type": "frozen", "names": [r"^head\.weight$"]}, {"type": "architecture"}],
    }
    lock = lock_factory(spec)
    locked, recorded = locked_by(lock, trained)
    assert [type(r).__name__ for r in recorded.record.children] == ["FrozenRecord", "ArchitectureRecord"]
    assert recorded.certify(locked)[-1].holds
    with torch.no_grad():
        locked.head.weight[0, 0] += 1.0  # the frozen child now fails, architecture still holds
    certs = recorded.certify(locked)
    assert [c.lock for c in certs] == ["frozen", "architecture", "composite"]
    assert [c.holds for c in certs] == [False, True, False]
    assert (certs[-1].measured, certs[-1].required, certs[-1].relation) == (1.0, 2.0, ">=")
    any_lock = lock_factory({**lock.config(), "type": "composite", "mode": "any"})
    top = any_lock.certify(locked, recorded.record)[-1]
    assert top.holds and (top.measured, top.required) == (1.0, 1.0)
    assert lock_factory(spec["locks"]).config()["mode"] == "all"  # a list is a composite "all"
    # children apply in order: a cap applied after a freeze rescales the frozen tensor, and the certificate shows it
    clash = lock_factory([{"type": "frozen", "names": ["^body"]}, {"type": "spectral-cap", "max_sigma": 0.5}])
    m, r = locked_by(clash, trained)
    assert [c.holds for c in r.certify(m)] == [False, True, False]
    ok = lock_factory([{"type": "spectral-cap", "max_sigma": 0.5}, {"type": "frozen", "names": ["^body"]}])
    capped, r = locked_by(ok, trained)
    with torch.no_grad():
        capped(torch.rand(4, 1, 8, 8))  # the cap's forward hook leaves an already capped frozen tensor bit-identical
    assert all(c.holds for c in r.certify(capped))


def test_recorded_lock_entry_and_the_record_type_check(trained):
    lock = lock_factory({"type": "frozen", "names": ["bias"]})
    out = lock.apply(trained)
    recorded = RecordedLock(lock, out.record)
    assert recorded.name == "frozen"
    assert recorded.entry() == {
        "type": "frozen",
        "config": {"names": ["bias"]},
        "record": {"hashes": dict(out.record.hashes)},
    }
    with pytest.raises(TypeError, match="FrozenRecord"):  # another lock's record is refused
        RecordedLock(lock, lock_factory({"type": "sparsity", "k": 5}).apply(trained).record).entry()


# ---------------------------------------------------------------- factory and errors


def test_factory_errors():
    with pytest.raises(UnknownNameError, match=r"valid: .*spectral-cap"):
        lock_factory({"type": "padlock"})
    with pytest.raises(ValueError, match=r"valid: \['exclude', 'include', 'max_sigma', 'tol'\]"):
        lock_factory({"type": "spectral-cap", "sigma": 1.0})
    with pytest.raises(ValueError, match="no 'type'"):
        lock_factory({"max_sigma": 1.0})
    with pytest.raises(UnknownNameError, match="valid"):
        lock_factory([{"type": "frozen", "names": ["x"]}, {"type": "nope"}])
    with pytest.raises(ValueError, match="mode"):
        lock_factory({"type": "composite", "mode": "most", "locks": [{"type": "architecture"}]})
    with pytest.raises(ValueError, match="valid"):  # measured values are not settings any more
        lock_factory({"type": "frozen", "names": ["x"], "hashes": {}})


def test_apply_fails_before_training(digits, monkeypatch):
    import sys

    sd = sys.modules["trainlock.locks.specdef"]  # the package's `specdef` name is the function

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(sd, "fit", boom)
    model = mlp()
    with pytest.raises(ValueError, match=r"matches no parameter name.*body.0.weight"):
        lock_factory({"type": "frozen", "names": ["^encoder\\."]}).apply(model)
    with pytest.raises(ValueError, match="retain"):
        lock_factory({"type": "specdef"}).apply(model)
    with pytest.raises(ValueError, match="no lockable weights"):
        lock_factory([*FROZEN_HEAD_AND_ARCH, {"type": "specdef", "include": "nothing"}]).apply(model, digits)

    class NoMatrix(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(64))

        def forward(self, x):
            return x.flatten(1) * self.scale

    for spec in ({"type": "spectral-cap"}, {"type": "specdef"}, {"type": "sparsity", "fraction": 0.5}):
        with pytest.raises(ValueError, match="no lockable weights"):
            lock_factory(spec).apply(NoMatrix(), digits)
    with pytest.raises(ValueError, match=r"no nn.Linear"):
        lock_factory({"type": "specdef-reparam"}).apply(NoMatrix())


def test_spec_files_json_and_yaml(tmp_path, trained):
    spec = [{"type": "architecture"}, {"type": "sparsity", "k": 200}]
    path = tmp_path / "lock.json"
    path.write_text(json.dumps(spec))
    lock = lock_factory(path)
    assert [c.name for c in lock.children] == ["architecture", "sparsity"]
    locked, recorded = locked_by(lock, trained)
    assert all(c.holds for c in recorded.certify(locked))
    yaml = pytest.importorskip("yaml")
    ypath = tmp_path / "lock.yaml"
    ypath.write_text(yaml.safe_dump({"type": "frozen", "names": ["head"]}))
    assert lock_factory(str(ypath)).name == "frozen"
    bad = tmp_path / "lock.txt"
    bad.write_text("type: frozen")
    with pytest.raises(ValueError, match="not valid JSON"):
        lock_factory(bad)


def test_cli_lock_with_spec(tmp_path, trained, digits, capsys):
    from trainlock.cli.main import main

    base = tmp_path / "base"
    tl.save(trained, base, {"task": "digits"})
    spec = tmp_path / "spec.json"
    # order matters: capping after freezing would rescale the frozen tensors (and the frozen check would say so)
    spec.write_text(json.dumps([{"type": "spectral-cap", "max_sigma": 2.0}, {"type": "frozen", "names": ["^body"]}]))
    assert main(["lock", str(base), "--out", str(tmp_path / "locked"), "--spec", str(spec)]) == 0
    out = capsys.readouterr().out
    assert "frozen" in out and "spectral-cap" in out and "composite" in out
    model, meta = tl.load(tmp_path / "locked")
    assert meta["locks"][0]["type"] == "composite" and len(meta["certificates"]) == 3
    assert all(c["holds"] for c in meta["certificates"])
    again = lock_from_meta(meta)
    assert all(c.holds for c in again.certify(model))


def test_reparam_model_saves_and_loads_with_its_inserted_layers(tmp_path, digits):
    import trainlock as tl
    from trainlock.certify.verify import verify

    model = tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[16])
    lock = tl.locks.lock_factory({"type": "specdef-reparam", "factor": 100.0})
    res = tl.lock(model, lock, digits)
    locked, record = res.model, res.record
    tl.save(locked, tmp_path, {"task": "digits", **record})
    loaded, meta = tl.load(tmp_path)
    assert meta["structure"]["wrappers"] and "comp" in " ".join(n for n, _ in loaded.named_parameters())
    x = digits.x_test[:16]
    torch.testing.assert_close(loaded(x), locked(x))
    report = verify(tmp_path)
    assert report.ok, report.table()


def test_inline_json_spec_through_the_cli(tmp_path, digits):
    import numpy as np

    from trainlock.cli.main import main

    np.savez(
        tmp_path / "d.npz",
        x_train=digits.x_train.numpy(),
        y_train=digits.y_train.numpy(),
        x_test=digits.x_test.numpy(),
        y_test=digits.y_test.numpy(),
    )
    model = tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[16])
    tl.save(model, tmp_path / "base", {"task": f"npz:{tmp_path / 'd.npz'}"})
    spec = '{"type": "spectral-cap", "max_sigma": 0.5}'
    assert main(["lock", str(tmp_path / "base"), "--out", str(tmp_path / "capped"), "--spec", spec]) == 0
    assert main(["verify", str(tmp_path / "capped")]) == 0
    assert main(["lock", str(tmp_path / "base"), "--out", str(tmp_path / "x"), "--spec", "{bad"]) == 2
