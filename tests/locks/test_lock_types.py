import copy
import json

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.locks import LOCKS, Certificate, Lock, lock_factory, lock_from_meta
from trainlock.locks.specdef_reparam import Compensated, restore_structure, structure_meta
from trainlock.registry import UnknownNameError
from trainlock.train import LoopConfig, fit

BUILTIN = {"architecture", "composite", "energy", "frozen", "sparsity", "specdef", "specdef-reparam", "spectral-cap"}

SPECS = {  # one working spec per registered lock type, for the shared tests
    "architecture": {"type": "architecture"},
    "composite": {"type": "composite", "mode": "all",
                  "locks": [{"type": "frozen", "names": [r"^head\."]}, {"type": "architecture"}]},
    "energy": {"type": "energy", "bad_task": "digits-permuted-1", "delta": 0.5, "max_samples": 300},
    "frozen": {"type": "frozen", "names": [r"^body\.0\.weight$", "bias"]},
    "sparsity": {"type": "sparsity", "fraction": 0.5},
    "specdef": {"type": "specdef", "lr": 1.0, "max_steps": 10, "batch_size": 32, "device": "cpu"},
    "specdef-reparam": {"type": "specdef-reparam"},
    "spectral-cap": {"type": "spectral-cap", "max_sigma": 0.5},
}


def mlp(hidden=(16,)):
    return tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=list(hidden))


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = mlp()
    fit(model, digits, LoopConfig(optimizer="adam", lr=1e-2, epochs=3, batch_size=32, device="cpu"), progress=False)
    return model


def make(spec, bad=None) -> Lock:
    lock = lock_factory(copy.deepcopy(spec))
    if bad is not None and hasattr(lock, "use_tasks"):
        lock.use_tasks(bad)
    return lock


def train(model, task, optimizer="sgd", lr=1.0, steps=20):
    return fit(model, task, LoopConfig(optimizer=optimizer, lr=lr, max_steps=steps, batch_size=32, device="cpu"),
               progress=False)


def test_every_builtin_type_is_registered():
    assert BUILTIN <= set(LOCKS.names())


@pytest.mark.parametrize("name", LOCKS.names())
def test_each_lock_applies_certifies_and_round_trips(name, trained, digits, digits_permuted):
    if name not in SPECS:
        pytest.skip(f"no shared-test spec for lock type {name!r}")
    lock = make(SPECS[name], digits_permuted)
    assert isinstance(lock, Lock) and lock.name == name
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    locked = lock.apply(trained, digits)
    assert locked is not trained
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())  # input untouched
    certs = lock.certify(locked)
    assert certs and all(isinstance(c, Certificate) for c in certs)
    assert all(c.holds for c in certs), [(c.lock, c.invariant, c.measured, c.relation, c.required) for c in certs]
    assert any(c.lock == name for c in certs)
    for c in certs:
        json.dumps(c.to_dict())
        assert Certificate.from_dict(c.to_dict()).holds == c.holds
        assert c.threat_model in ("release-time", "training-time") and c.removal
    # the config survives JSON and rebuilds a lock that certifies the same weights
    meta = json.loads(json.dumps({"locks": [{"type": lock.name, "config": lock.config()}]}))
    again = lock_from_meta(meta)
    if hasattr(again, "use_tasks"):
        again.use_tasks(digits_permuted)
    assert [c.holds for c in again.certify(locked)] == [c.holds for c in certs]
    with pytest.raises(ValueError, match="valid"):
        LOCKS.get(name).from_config({**lock.config(), "no_such_key": 1})


# ---------------------------------------------------------------- specdef-reparam


def test_reparam_keeps_the_function_and_inflates_sigma():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 8, 8, dtype=torch.float64)
    model = mlp().double()
    lock = lock_factory({"type": "specdef-reparam"})  # factor 1e4, k 1, every Linear
    locked = lock.apply(model)
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
    assert all(c.holds for c in lock.certify(locked))


def test_reparam_float32_and_tall_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))  # out > in: C must stay invertible
    x = torch.randn(32, 4)
    locked = lock_factory({"type": "specdef-reparam", "factor": 100.0, "k": 2}).apply(model)
    with torch.no_grad():
        torch.testing.assert_close(locked(x), model(x), rtol=1e-4, atol=1e-5)
    big = lock_factory({"type": "specdef-reparam"}).apply(model)  # factor 1e4 in float32: error ~ 1e4 * eps
    with torch.no_grad():
        ref = model(x)
        assert float((big(x) - ref).abs().max()) < 1e-2 * float(ref.abs().max())


def test_reparam_structure_round_trip_and_fold(tmp_path):
    torch.manual_seed(0)
    lock = lock_factory({"type": "specdef-reparam", "layers": r"^body\."})
    locked = lock.apply(mlp())
    meta = json.loads(json.dumps(structure_meta(locked)))
    assert meta == {"wrappers": [{"name": "body.0", "in": 64, "out": 16, "bias": True}]}
    fresh = restore_structure(mlp(), meta)
    fresh.load_state_dict(locked.state_dict(), strict=True)
    x = torch.rand(8, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), locked(x))
    assert all(c.holds for c in lock.certify(fresh))
    with pytest.raises(ValueError, match="expected nn.Linear"):
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
    structure = lock.certify(fresh)[0]
    assert not structure.holds and structure.adversary_can_remove and "merge" in structure.removal


# ---------------------------------------------------------------- training-time locks


def test_frozen_survives_training_and_detects_one_element(trained, digits):
    lock = lock_factory({"type": "frozen", "names": [r"^body\."]})
    locked = lock.apply(trained)
    assert not locked.body[0].weight.requires_grad and locked.head.weight.requires_grad
    train(locked, digits, optimizer="adam", lr=1e-2, steps=10)
    (cert,) = lock.certify(locked)
    assert cert.holds and cert.measured == cert.required == 2
    with torch.no_grad():
        w = locked.body[0].weight
        w.view(-1)[7] = torch.nextafter(w.view(-1)[7], torch.tensor(float("inf")))  # one ulp, one element
    (cert,) = lock.certify(locked)
    assert not cert.holds and cert.details["changed"] == ["body.0.weight"]


def test_spectral_cap_holds_under_big_sgd_steps(trained, digits):
    lock = lock_factory({"type": "spectral-cap", "max_sigma": 0.5})
    locked = lock.apply(trained)
    train(locked, digits, optimizer="sgd", lr=1.0, steps=20)
    (cert,) = lock.certify(locked)
    assert cert.holds and cert.measured <= 0.5 * (1 + 1e-4)
    free = copy.deepcopy(trained)
    train(free, digits, optimizer="sgd", lr=1.0, steps=20)
    assert not lock.certify(free)[0].holds  # the same run without the lock leaves the cap
    head = cert.details["layers"]["head.weight"]
    with torch.no_grad():
        locked.head.weight.mul_(10)
    (cert,) = lock.certify(locked)
    assert not cert.holds and cert.measured == pytest.approx(10 * head, rel=1e-5)


def test_sparsity_keeps_zeros_through_training(trained, digits):
    lock = lock_factory({"type": "sparsity", "fraction": 0.7})
    locked = lock.apply(trained)
    zeros = {n: p == 0 for n, p in locked.named_parameters() if n.endswith("weight")}
    total = sum(z.numel() for z in zeros.values())
    assert lock.config()["max_nonzero"] == total - round(0.7 * total)
    train(locked, digits, optimizer="adam", lr=1e-2, steps=20)
    for n, p in locked.named_parameters():
        if n in zeros:
            assert torch.all(p[zeros[n]] == 0), n
    (cert,) = lock.certify(locked)
    assert cert.holds and cert.measured <= cert.required
    locked_k = lock_factory({"type": "sparsity", "k": 100}).apply(trained)
    assert sum(int(torch.count_nonzero(p)) for n, p in locked_k.named_parameters() if n.endswith("weight")) == 100


def test_energy_records_the_barrier_and_refuses_without_one(trained, digits, digits_permuted):
    lock = make(SPECS["energy"], digits_permuted)
    with pytest.raises(ValueError, match="retain"):
        lock.apply(trained)
    locked = lock.apply(trained, digits)
    (cert,) = lock.certify(locked)
    assert cert.holds and cert.required == pytest.approx(lock.config()["auth_loss"] + 0.5)
    assert cert.measured - cert.details["auth_loss_now"] >= 0.5
    untrained = make({**SPECS["energy"], "delta": 5.0}, digits_permuted)
    with pytest.raises(ValueError, match="barrier does not hold"):
        untrained.apply(mlp(), digits)


def test_composite_all_and_any(trained):
    spec = {"type": "composite", "mode": "all",
            "locks": [{"type": "frozen", "names": [r"^head\.weight$"]}, {"type": "architecture"}]}
    lock = lock_factory(spec)
    locked = lock.apply(trained)
    assert lock.certify(locked)[-1].holds
    with torch.no_grad():
        locked.head.weight[0, 0] += 1.0  # the frozen child now fails, architecture still holds
    certs = lock.certify(locked)
    assert [c.lock for c in certs] == ["frozen", "architecture", "composite"]
    assert [c.holds for c in certs] == [False, True, False]
    assert (certs[-1].measured, certs[-1].required, certs[-1].relation) == (1.0, 2.0, ">=")
    any_lock = lock_factory({**lock.config(), "type": "composite", "mode": "any"})
    top = any_lock.certify(locked)[-1]
    assert top.holds and (top.measured, top.required) == (1.0, 1.0)
    assert lock_factory(spec["locks"]).config()["mode"] == "all"  # a list is a composite "all"
    # children apply in order: a cap applied after a freeze rescales the frozen tensor, and the certificate shows it
    clash = lock_factory([{"type": "frozen", "names": ["^body"]}, {"type": "spectral-cap", "max_sigma": 0.5}])
    assert [c.holds for c in clash.certify(clash.apply(trained))] == [False, True, False]
    ok = lock_factory([{"type": "spectral-cap", "max_sigma": 0.5}, {"type": "frozen", "names": ["^body"]}])
    capped = ok.apply(trained)
    with torch.no_grad():
        capped(torch.rand(4, 1, 8, 8))  # the cap's forward hook leaves an already capped frozen tensor bit-identical
    assert all(c.holds for c in ok.certify(capped))


# ---------------------------------------------------------------- factory and errors


def test_factory_errors():
    with pytest.raises(UnknownNameError, match="valid: .*spectral-cap"):
        lock_factory({"type": "padlock"})
    with pytest.raises(ValueError, match=r"valid: \['exclude', 'include', 'max_sigma', 'tol'\]"):
        lock_factory({"type": "spectral-cap", "sigma": 1.0})
    with pytest.raises(ValueError, match="no 'type'"):
        lock_factory({"max_sigma": 1.0})
    with pytest.raises(UnknownNameError, match="valid"):
        lock_factory([{"type": "frozen", "names": ["x"]}, {"type": "nope"}])
    with pytest.raises(ValueError, match="mode"):
        lock_factory({"type": "composite", "mode": "most", "locks": [{"type": "architecture"}]})


def test_apply_fails_before_training(digits, monkeypatch):
    import sys

    sd = sys.modules["trainlock.locks.specdef"]  # the package's `specdef` name is the function

    def boom(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(sd, "fit", boom)
    model = mlp()
    with pytest.raises(ValueError, match="matches no parameter name.*body.0.weight"):
        lock_factory({"type": "frozen", "names": ["^encoder\\."]}).apply(model)
    with pytest.raises(ValueError, match="retain"):
        lock_factory({"type": "specdef"}).apply(model)
    with pytest.raises(ValueError, match="no lockable weights"):
        lock_factory(SPECS["composite"]["locks"] + [{"type": "specdef", "include": "nothing"}]).apply(model, digits)

    class NoMatrix(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(64))

        def forward(self, x):
            return x.flatten(1) * self.scale

    for spec in ({"type": "spectral-cap"}, {"type": "specdef"}, {"type": "sparsity", "fraction": 0.5}):
        with pytest.raises(ValueError, match="no lockable weights"):
            lock_factory(spec).apply(NoMatrix(), digits)
    with pytest.raises(ValueError, match="no nn.Linear"):
        lock_factory({"type": "specdef-reparam"}).apply(NoMatrix())


def test_spec_files_json_and_yaml(tmp_path, trained):
    spec = [{"type": "architecture"}, {"type": "sparsity", "k": 200}]
    path = tmp_path / "lock.json"
    path.write_text(json.dumps(spec))
    lock = lock_factory(path)
    assert [c.name for c in lock.children] == ["architecture", "sparsity"]
    assert all(c.holds for c in lock.certify(lock.apply(trained)))
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

    np.savez(tmp_path / "d.npz", x_train=digits.x_train.numpy(), y_train=digits.y_train.numpy(),
             x_test=digits.x_test.numpy(), y_test=digits.y_test.numpy())
    model = tl.models.build("mlp", input_shape=[1, 8, 8], num_classes=10, hidden=[16])
    tl.save(model, tmp_path / "base", {"task": f"npz:{tmp_path / 'd.npz'}"})
    spec = '{"type": "spectral-cap", "max_sigma": 0.5}'
    assert main(["lock", str(tmp_path / "base"), "--out", str(tmp_path / "capped"), "--spec", spec]) == 0
    assert main(["verify", str(tmp_path / "capped")]) == 0
    assert main(["lock", str(tmp_path / "base"), "--out", str(tmp_path / "x"), "--spec", "{bad"]) == 2
