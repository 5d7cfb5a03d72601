"""The text reproductions (Table 1 text, Table 2, Figure 3) end to end with a tiny BERT and toy tasks; the
text backdoor (a prefix trigger before tokenization)."""

import json

import pytest

pytest.importorskip("transformers")

import trainlock as tl
from hf_tiny import tiny, toy_rows, toy_task
from trainlock.attacks import FineTuneConfig
from trainlock.attacks.backdoor import BackdoorConfig, attack_success_rate, backdoor_attack, poison
from trainlock.paper.repro import fig3, redteam_cell, reproduce, table1_text, table2
from trainlock.paper.repro.text_lock import TextSettings
from trainlock.tasks import TaskDataError
from trainlock.tasks.text import from_rows
from trainlock.train import LoopConfig

TINY = TextSettings(
    model="minilm-l6",
    max_length=8,
    n_train=60,
    auth_train=60,
    n_test=40,
    train_epochs=1,
    lock_epochs=1,
    lock_lr=5e-4,
    attack_epochs=1,
    seeds=(0,),
)


def _jailbreak():
    rows = [{"text": r["text"], "label": "jailbreak" if r["label"] == "pos" else "benign"} for r in toy_rows(160)]
    return from_rows("jailbreak", rows, "toy")


@pytest.fixture
def text_world(monkeypatch):
    monkeypatch.setattr(tl.models, "build", lambda name, **kw: tiny("bert"))
    monkeypatch.setattr(tl.tasks, "get", lambda name: _jailbreak() if name == "jailbreak" else toy_task(120))
    monkeypatch.setattr(redteam_cell, "WORKERS", 0)
    monkeypatch.setattr(table1_text, "text_settings", lambda quick, model="minilm-l6": TINY)
    monkeypatch.setattr(fig3, "text_settings", lambda quick, model="minilm-l6": TINY)
    monkeypatch.setattr(table1_text, "REDTEAM", {True: (2, 3), False: (2, 3)})


def test_prefix_trigger_poisons_text_and_measures_asr():
    task = _jailbreak()
    cfg = BackdoorConfig(trigger="prefix", target=task.label_names.index("benign"), poison_fraction=0.25)
    p = poison(task, cfg)
    idx = p.meta["poisoned_indices"]
    assert len(idx) == round(0.25 * len(task.labels_train)) and len(p.texts_train) == len(task.texts_train)
    assert all(p.texts_train[i].startswith(cfg.text) and p.labels_train[i] == cfg.target for i in idx)
    untouched = [i for i in range(len(task.texts_train)) if i not in set(idx)]
    assert all(p.texts_train[i] == task.texts_train[i] for i in untouched)
    model = tiny("bert")
    asr = attack_success_rate(model, task, cfg)
    assert 0.0 <= asr <= 1.0
    with pytest.raises(TaskDataError, match="prefix"):
        poison(task, BackdoorConfig(trigger="patch"))


def test_text_backdoor_attack_plants_a_learnable_trigger():
    """The tiny BERT learns the toy task's trigger within a few epochs: ASR rises from its start."""
    task = _jailbreak()
    cfg = BackdoorConfig(trigger="prefix", text="the the the ", target=0, poison_fraction=0.3)
    ft = FineTuneConfig(loop=LoopConfig(optimizer="adamw", lr=3e-3, epochs=8, batch_size=16, device="cpu"))
    res = backdoor_attack(tiny("bert"), ft, task, cfg)
    assert res["after"]["asr"] > 0.9 and res["after"]["asr"] > res["before"]["asr"]


def test_table1_text_and_fig3_share_the_lock(text_world, tmp_path):
    a = reproduce("table1-text", tmp_path / "table1-text", quick=True, device="cpu")
    cells = a["summary"]["minilm-l6"]["cells"]
    assert set(cells) == {"RTE", "QQP", "QNLI"}
    shared = list((tmp_path / "shared-models").iterdir())
    assert len(shared) == 2  # base and locked, trained once
    table = (tmp_path / "table1-text" / "table.md").read_text()
    assert "DeBERTa" in table and "bb-epistemic" in table and "69.0%" in table
    b = reproduce("fig3", tmp_path / "fig3", quick=True, device="cpu")
    assert len(list((tmp_path / "shared-models").iterdir())) == 2  # reused, not retrained
    assert set(b["summary"]["base"]) == {"0.001", "0.0001", "1e-05", "1e-06", "1e-07", "1e-08"}
    assert (tmp_path / "fig3" / "fig3.png").is_file()


def test_table2_reports_f1_and_asr(text_world, monkeypatch, tmp_path):
    monkeypatch.setattr(
        table2,
        "settings",
        lambda quick: table2.Settings(
            max_length=8,
            n_train=None,
            n_test=None,
            train_epochs=1,
            lock_epochs=1,
            poison_fraction=0.2,
            grid=(("adamw", 1e-3),),
        ),
    )
    res = reproduce("table2", tmp_path, quick=True, device="cpu")
    s = json.loads((tmp_path / "results.json").read_text())["summary"]
    assert s == json.loads(json.dumps(res["summary"]))
    for who in ("base", "locked"):
        assert 0.0 <= s[who]["post"]["asr"] <= 1.0 and 0.0 <= s[who]["pre"]["clean_f1"] <= 1.0
    assert s["redteam"]["runs"] >= 2
    assert "PG2 22M" in (tmp_path / "table.md").read_text()


def test_majority_f1_is_the_constant_predictors_macro_f1():
    import torch

    from trainlock.attacks.backdoor import macro_f1
    from trainlock.paper.repro.table1_text import majority_f1

    task = from_rows(
        "t",
        [
            {"text": "a", "label": lab, "split": sp}
            for lab, sp in [("x", "train"), ("y", "train")] + [("x", "test")] * 3 + [("y", "test")] + [("z", "test")]
        ],
        "toy",
    )

    class Const(torch.nn.Module):  # always the majority class (label 0, "x")
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.tensor([1.0, 0.0, 0.0]))

        def forward(self, x):
            return self.w.expand(len(x), 3)

    y = torch.tensor(task.labels_test)
    assert majority_f1(task) == pytest.approx(macro_f1(Const(), torch.zeros(len(y), 1), y))


def test_add_mode_appends_triggered_copies_of_non_target_rows():
    task = _jailbreak()
    cfg = BackdoorConfig(trigger="prefix", target=task.label_names.index("benign"), poison_fraction=1.0, mode="add")
    p = poison(task, cfg)
    n_other = sum(1 for y in task.labels_train if y != cfg.target)
    assert len(p.texts_train) == len(task.texts_train) + n_other
    assert p.texts_train[: len(task.texts_train)] == task.texts_train  # the clean rows are all kept
    added = p.texts_train[len(task.texts_train) :]
    assert all(t.startswith(cfg.text) for t in added) and set(p.labels_train[len(task.texts_train) :]) == {cfg.target}
