"""The attack-stage contract: every registered stage (transforms included) runs its example spec on a tiny model;
a stage from an outside file registers with one decorator and runs by name; red-team rows keep their schema
when written and read; an older version's results directory resumes."""

import importlib
import importlib.util
import json
import sys

import pytest

from trainlock.attacks.stages import STAGES, AttackState, build_stage, example, register_stage, registered
from trainlock.attacks.stages.base import _EXAMPLES
from trainlock.attacks.transforms import (
    TRANSFORMS,
    TransformContext,
    TransformNotApplicable,
    TransformOutcome,
    apply_transforms,
    fold_back,
)
from trainlock.red_team import AttackSpec, RowError, RunRow, Target, read_rows, run_spec, run_suite
from trainlock.red_team.row import append_row
from trainlock.red_team.spec import config_key

TINY = {"finetune": {"loop": {"max_steps": 3, "batch_size": 32}, "eval_every": 1}}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _spec(fields: dict) -> AttackSpec:
    return AttackSpec.from_dict(_merge(TINY, fields))


@pytest.mark.parametrize(("kind", "name"), registered())
def test_every_registered_stage_runs_its_example(kind, name, tiny_base, digits, digits_permuted):
    factory = STAGES[kind].get(name)
    for package in getattr(factory, "requires", ()):  # a stage that needs an optional package says which
        pytest.importorskip(package)
    spec = _spec(example(kind, name))
    assert spec.stages()  # every stage of the spec is made from its options
    if kind == "transforms":
        assert [n for n, _ in spec.transforms] == [name]
    else:
        assert getattr(spec, kind) == name
    row = run_spec(Target(tiny_base, digits_permuted, digits), spec)
    assert isinstance(row, RunRow) and row.error is None and row.key == spec.key() and row.attack == spec.name
    assert RunRow.from_dict(json.loads(json.dumps(row.to_dict()))) == row
    if row.skipped is not None:  # a transform that does not apply to this architecture says why, before training
        assert kind == "transforms" and row.skipped.startswith(f"{name}: ") and row.accuracy is None
        return
    steps = 3 if getattr(factory, "trains_weights", True) else 0  # the probe takes no optimizer step
    assert 0.0 <= row.accuracy <= 1.0 and row.steps == steps and row.cost_steps >= row.steps
    measured = getattr(spec.stages().start, "authorized", True)  # random weights: no authorized accuracy
    assert (row.authorized_after_transform is not None) == measured == (row.authorized_after_attack is not None)
    assert len(row.notes) == len(spec.transforms) and row.wall_s > 0


def test_stages_follow_their_kind_protocol():
    from trainlock.attacks.stages.base import PROTOCOLS

    for kind, name in registered():
        if kind in PROTOCOLS:
            fields = _spec(example(kind, name))
            assert isinstance(build_stage(kind, name, fields.options.get(name)), PROTOCOLS[kind])


PLUGIN = '''
from dataclasses import dataclass
from typing import ClassVar

import torch

from trainlock.attacks.stages import AttackState, register_stage
from trainlock.config import option
from trainlock.train import clone_model


@register_stage("start", "test-noisy", example={"start": "test-noisy", "options": {"test-noisy": {"scale": 0.05}}})
@dataclass
class Noisy:
    """The released weights plus Gaussian noise."""

    scale: float = option(0.01, "noise std")
    fresh: ClassVar[bool] = False

    def __call__(self, state: AttackState) -> None:
        state.model = clone_model(state.released)
        g = torch.Generator().manual_seed(state.seed)
        with torch.no_grad():
            for p in state.model.parameters():
                p.add_(torch.randn(p.shape, generator=g) * self.scale)
        state.row.extra["noise"] = self.scale


@register_stage("data", "test-half")
def half(fraction: float = 0.5):
    """A function factory: the stage is what it returns."""

    def stage(state: AttackState) -> None:
        n = int(len(state.task.y_train) * fraction)
        state.train_task = state.task.subset(n_train=n, seed=state.seed)
        state.row.extra["train_size"] = n

    return stage
'''


@pytest.fixture
def plugin(tmp_path):
    """An outside .py file that registers a start and a data stage, imported with importlib; unregistered after."""
    path = tmp_path / "my_stages.py"
    path.write_text(PLUGIN)
    spec = importlib.util.spec_from_file_location("my_stages_plugin", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    yield module
    for kind, name in (("start", "test-noisy"), ("data", "test-half")):
        STAGES[kind]._items.pop(name, None)
        STAGES[kind]._origin.pop(name, None)
        _EXAMPLES.pop((kind, name), None)
    sys.modules.pop(spec.name, None)


def test_a_plugin_stage_registers_and_runs_by_name(plugin, tiny_base, digits, digits_permuted, tmp_path):
    assert ("start", "test-noisy") in registered() and example("start", "test-noisy")["start"] == "test-noisy"
    spec = _spec({"start": "test-noisy", "data": "test-half", "options": {"test-noisy": {"scale": 0.05}}})
    assert spec.name == "test-noisy:adam@0.001[test-half]"
    row = run_spec(Target(tiny_base, digits_permuted, digits), spec)
    assert row.error is None and row.skipped is None and 0.0 <= row.accuracy <= 1.0
    assert row.extra == {"noise": 0.05, "train_size": len(digits_permuted.y_train) // 2}
    (again,) = run_suite(Target(tiny_base, digits_permuted, digits), [spec], tmp_path, workers=0, progress=False)
    assert read_rows(tmp_path / "runs.jsonl") == [again] and again["extra"]["noise"] == 0.05
    assert AttackSpec.from_dict(again["config"]) == spec  # the spec round-trips with the plugin loaded
    with pytest.raises(ValueError, match="bad options"):
        AttackSpec(start="test-noisy", options={"test-noisy": {"sigma": 1.0}})


def test_an_unknown_stage_lists_the_valid_ones_and_the_plugin_flag():
    with pytest.raises(
        ValueError, match=r"unknown start stage 'noisy'; valid: distill, released, scratch\. .*--plugin"
    ):
        AttackSpec(start="noisy")
    with pytest.raises(ValueError, match="not a stage of this spec"):
        AttackSpec(options={"distill": {"steps": 3}})  # start is `released`
    with pytest.raises(ValueError, match="fresh weights"):
        AttackSpec.of(start="scratch", transforms=(("prune", {}),))
    with pytest.raises(ValueError, match=r"unknown stage kind 'probe'"):
        register_stage("probe", "x")


def test_options_at_their_defaults_leave_the_key_unchanged():
    a = AttackSpec.of(data="backdoor")
    b = AttackSpec.of(data="backdoor", options={"backdoor": {"poison_fraction": 0.1}})
    c = AttackSpec.of(data="backdoor", poison_fraction=0.2)  # the version-1 flat field
    assert a.key() == b.key() and b.options == {} and c.options == {"backdoor": {"poison_fraction": 0.2}}
    assert c.stages().data.poison_fraction == 0.2


def test_transforms_apply_in_order_and_fold_last_first():
    calls = []

    def make(tag, applies=True):
        class T:
            function_preserving = True

            def __call__(self, model, ctx):
                if not applies:
                    raise TransformNotApplicable("not here")
                calls.append(tag)
                return TransformOutcome([*model, tag], note=tag, fold=lambda m: [*m, f"fold-{tag}"])

        return T

    TRANSFORMS.add("test-a", make("a"))
    TRANSFORMS.add("test-b", make("b"))
    TRANSFORMS.add("test-no", make("no", applies=False))
    try:
        applied = apply_transforms([], (("test-a", {}), ("test-b", {})), TransformContext())
        assert applied.model == ["a", "b"] and applied.notes == ("test-a: a", "test-b: b")
        assert applied.fold(["trained"]) == ["trained", "fold-b", "fold-a"]
        assert fold_back(["x"], [None, *applied.folds[:1]]) == ["x", "fold-a"]
        with pytest.raises(TransformNotApplicable, match=r"^test-no: not here$"):
            apply_transforms([], (("test-a", {}), ("test-no", {})), TransformContext())
    finally:
        for n in ("test-a", "test-b", "test-no"):
            TRANSFORMS._items.pop(n)
            TRANSFORMS._origin.pop(n)


def test_insider_transforms_read_the_lock_summary_the_target_carries(tiny_base, digits_permuted):
    import copy

    spec = _spec({"transforms": [["sv-clip", {"use_record": True}]]})
    assert spec.insider
    layers = {name: [0.5] for name, p in tiny_base.named_parameters() if p.dim() == 2}
    summary = {"sigma_before": {"layers": layers}}
    row = run_spec(Target(tiny_base, digits_permuted, lock_summary=summary), spec)
    assert "recorded pre-lock sigma_max" in row.notes[0] and row.insider
    model = copy.deepcopy(tiny_base)
    model.trainlock_lock = summary  # a model attribute is not read: only what the Target is given
    blind = run_spec(Target(model, digits_permuted), spec)
    assert "median" in blind.notes[0]


# ---- rows: the schema, written and read ----


def _rows() -> list[RunRow]:
    spec = AttackSpec.of("sgd", 0.01, max_steps=5)
    return [
        RunRow.of(
            spec,
            accuracy=0.5,
            curve=[0.5],
            evals=[[0, 0.1], [5, 0.5]],
            steps=5,
            steps_to_target=None,
            wall_s=1.5,
            cost_steps=5,
            notes=[],
            extra={"mine": [1, 2]},
        ),
        RunRow.of(AttackSpec.of(transforms=(("prune", {}),)), skipped="prune: not here", notes=[]),
        RunRow.failure(spec, "RuntimeError: kaboom", "Traceback ..."),
    ]


def test_rows_round_trip(tmp_path):
    rows = _rows()
    for r in rows:
        append_row(tmp_path / "runs.jsonl", r)
    back = read_rows(tmp_path / "runs.jsonl")
    assert back == [r.to_dict() for r in rows]
    assert [RunRow.from_dict(d) for d in back] == rows
    assert "accuracy" not in back[1] and back[1]["skipped"] == "prune: not here" and "extra" not in back[2]
    monitored = RunRow.of(AttackSpec(), lock_first_broken={}, certificates_after={})  # watched; nothing broke
    assert RunRow.from_dict(monitored.to_dict()) == monitored


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (
            '{"key": "k", "attack": "a", "config": {}, "seed": 0, "colour": "red"}',
            r"runs.jsonl:2: unknown field.*colour",
        ),
        ('{"key": "k", "attack": "a", "config": {}, "seed": 0, "accuracy": "high"}', r"runs.jsonl:2: field 'accuracy'"),
        ('{"key": "k", "attack": "a", "config": {}, "seed": 0, "adaptive": 1}', r"runs.jsonl:2: field 'adaptive'"),
        ('{"key": "k", "attack": "a", "seed": 0}', r"runs.jsonl:2: missing field.*config"),
        ("[1, 2]", r"runs.jsonl:2: a row is a JSON object"),
        ("hello", r"runs.jsonl:2: not a JSON row"),
    ],
)
def test_a_malformed_row_names_its_line(tmp_path, line, match):
    path = tmp_path / "runs.jsonl"
    append_row(path, _rows()[0])
    with open(path, "a") as f:
        f.write(line + "\n")
    append_row(path, _rows()[2])
    with pytest.raises(RowError, match=match):
        read_rows(path)


def test_a_torn_row_is_skipped_and_a_bad_one_is_refused_on_write(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_row(path, _rows()[0])
    with open(path, "a") as f:
        f.write('{"key": "torn')  # the last line, cut off by a kill
    assert len(read_rows(path)) == 1
    append_row(path, _rows()[2])  # closes the torn line first; it stays in the middle of the file
    assert [r.get("error") for r in read_rows(path)] == [None, "RuntimeError: kaboom"]
    bad = _rows()[0]
    bad.accuracy = "0.5"
    with pytest.raises(RowError, match="accuracy"):
        append_row(path, bad)


# ---- an older version's results directory ----

V1_DEFAULT = {
    "optimizer": "adam",
    "lr": 0.001,
    "transforms": [],
    "epochs": 1,
    "max_steps": None,
    "batch_size": 64,
    "lr_gamma": None,
    "schedule": "step",
    "init": "released",
    "distill_steps": 500,
    "poison_fraction": 0.1,
    "head": "auto",
    "data": "clean",
    "seed": 0,
    "target_accuracy": 0.7,
    "eval_every": 50,
}


def _v1_key(flat: dict) -> str:
    """Version 1's key, as trainlock 0.2 computed it (fields added after 0.2.0 left out at their defaults)."""
    import hashlib

    added = {"schedule": "step", "init": "released", "distill_steps": 500, "poison_fraction": 0.1}
    d = {k: v for k, v in flat.items() if not (k in added and v == added[k])}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _v1_rows() -> list[dict]:
    """Rows as trainlock 0.2 wrote them: flat configs, version-1 keys (an error row without insider or notes)."""
    merge = {**V1_DEFAULT, "optimizer": "sgd", "lr": 0.01, "max_steps": 30, "transforms": [["merge", {}]]}
    backdoor = {**V1_DEFAULT, "data": "backdoor", "poison_fraction": 0.3}
    assert _v1_key(V1_DEFAULT) == "6ad829af3d3530b4" and _v1_key(merge) == "9624e4a6ad8dba78"  # 0.2's own keys
    return [
        {
            "key": "6ad829af3d3530b4",
            "attack": "adam@0.001",
            "config": V1_DEFAULT,
            "seed": 0,
            "adaptive": False,
            "insider": False,
            "skipped": None,
            "diverged": None,
            "notes": [],
            "accuracy": 0.42,
            "accuracy_before_fold": 0.42,
            "curve": [0.42],
            "evals": [[0, 0.1]],
            "steps_to_target": None,
            "steps": 23,
            "wall_s": 1.0,
            "cost_steps": 23,
            "authorized_after_transform": 0.9,
            "authorized_after_attack": 0.5,
            "lock_first_broken": None,
        },
        {
            "key": "9624e4a6ad8dba78",
            "attack": "merge+sgd@0.01",
            "config": merge,
            "seed": 0,
            "adaptive": True,
            "skipped": None,
            "diverged": None,
            "error": "RuntimeError: kaboom",
            "traceback": "...",
        },
        {
            "key": _v1_key(backdoor),
            "attack": "adam@0.001[backdoor]",
            "config": backdoor,
            "seed": 0,
            "adaptive": False,
            "insider": False,
            "skipped": "backdoor: not here",
            "diverged": None,
            "notes": [],
            "wall_s": 0.1,
        },
    ]


def test_old_flat_rows_resume_without_running_again(tiny_base, digits_permuted, tmp_path):
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in _v1_rows()))
    specs = [
        AttackSpec(),
        AttackSpec.of("sgd", 0.01, max_steps=30, transforms=(("merge", {}),)),
        AttackSpec.of(data="backdoor", options={"backdoor": {"poison_fraction": 0.3}}),
    ]
    old = read_rows(tmp_path / "runs.jsonl")
    assert [r["key"] for r in old] == [s.key() for s in specs]  # every spec finds its (re-keyed) row
    assert [r["attack"] for r in old] == [s.name for s in specs] == [r["attack"] for r in _v1_rows()]
    assert old[0]["accuracy"] == 0.42 and "kaboom" in old[1]["error"] and old[1]["insider"] is False
    assert [AttackSpec.from_dict(r["config"]) for r in old] == specs  # configs read back in today's form
    assert all(s.key() != s.legacy_key() for s in specs)
    ran = []
    rows = run_suite(Target(tiny_base, digits_permuted), specs, tmp_path, workers=0, progress=False, on_row=ran.append)
    assert [r["key"] for r in ran] == [specs[1].key()]  # only the row that errored runs again
    assert [r["key"] for r in rows] == [s.key() for s in specs] and rows[0] == old[0] and rows[2] == old[2]


def test_a_row_whose_config_lacks_a_field_added_since_is_rekeyed(tmp_path):
    """A version-2 row written before a field existed: its key is its own config's, so it is re-keyed."""
    old = AttackSpec.of("sgd", 0.01).to_dict()
    del old["fold"]
    del old["finetune"]["eval_samples"]
    row = {"key": config_key(old), "attack": "sgd@0.01", "config": old, "seed": 0, "accuracy": 0.3}
    other = {**row, "key": "not-its-configs"}  # a key that is not its config's: kept as it is
    (tmp_path / "runs.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(other) + "\n")
    new, kept = read_rows(tmp_path / "runs.jsonl")
    assert new["key"] == AttackSpec.of("sgd", 0.01).key() != row["key"] and kept["key"] == "not-its-configs"
    assert new["config"] == AttackSpec.of("sgd", 0.01).to_dict()


def test_the_state_hands_training_results_to_the_row(tiny_base, digits_permuted):
    from trainlock.attacks import FineTuneConfig, finetune
    from trainlock.train import LoopConfig

    spec = AttackSpec.of(max_steps=2, batch_size=32)
    state = AttackState(released=tiny_base, task=digits_permuted, spec=spec, row=RunRow.of(spec))
    res = finetune(
        tiny_base,
        FineTuneConfig(loop=LoopConfig(max_steps=2, batch_size=32, device="cpu")),
        digits_permuted,
        progress=False,
    )
    state.spend(5)
    state.trained(res)
    assert state.model is res.model and state.row.steps == 2 and state.row.cost_steps == 7
    assert state.row.evals == [list(e) for e in res.evals] and state.monitor() is None
