"""BIG-bench tasks from a fake source package built here (the tests never need bigbench itself)."""

import io
import json
import tarfile

import pytest

import trainlock.tasks as T
from trainlock.cli import main
from trainlock.tasks import TaskDataError, bigbench


def _examples(n):
    out = [
        {
            "input": f"Premise: p{i}. Hypothesis: h{i}.",
            "target_scores": {"entailment": int(i % 3 == 0), "non-entailment": int(i % 3 != 0)},
        }
        for i in range(n)
    ]
    out.append({"input": "a tie", "target_scores": {"entailment": 1, "non-entailment": 1}})  # no single best answer
    return out


def _sdist(path, tasks):
    with tarfile.open(path, "w:gz") as tar:

        def add(name, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        for t, n in tasks.items():
            add(
                f"bigbench-1.0.0/bigbench/benchmark_tasks/{t}/task.json",
                json.dumps({"examples": _examples(n)}).encode(),
            )
            add(f"bigbench-1.0.0/bigbench/benchmark_tasks/{t}/README.md", b"readme")
        add("bigbench-1.0.0/bigbench/api/model.py", b"print('never extracted')")
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLOCK_DATA", str(tmp_path / "data"))
    return tmp_path / "data" / "bigbench"


def test_missing_task_names_the_command_that_fetches_it(cache):
    with pytest.raises(TaskDataError, match="trainlock fetch bigbench"):
        T.get("bigbench:epistemic_reasoning")
    with pytest.raises(TaskDataError, match="trainlock fetch bigbench --tasks other_task"):
        T.get("bigbench:other_task")


def test_fetch_extracts_only_the_named_tasks_and_labels_are_the_best_answer(cache, tmp_path):
    sdist = _sdist(tmp_path / "bigbench-1.0.0.tar.gz", {"epistemic_reasoning": 50, "other_task": 10})
    assert main(["fetch", "bigbench", "--tasks", "epistemic_reasoning", "--sdist", str(sdist)]) == 0
    assert sorted(p.name for p in cache.iterdir()) == ["epistemic_reasoning"]
    assert not list(cache.rglob("*.py"))
    t = T.get("bigbench:epistemic_reasoning")
    assert t.label_names == ["entailment", "non-entailment"] and t.meta["dropped_examples"] == 1
    assert len(t.labels_train) + len(t.labels_test) == 50 and len(t.labels_test) == 10  # seeded 80/20
    texts = dict(zip(t.texts_train + t.texts_test, t.labels_train + t.labels_test, strict=False))
    assert texts["Premise: p3. Hypothesis: h3."] == 0 and texts["Premise: p4. Hypothesis: h4."] == 1
    assert T.get("bb-epistemic").name == "bb-epistemic"
    assert T.get("bigbench:epistemic_reasoning").texts_test == t.texts_test  # the split is fixed


def test_fetch_refuses_unknown_tasks_and_missing_files(cache, tmp_path):
    sdist = _sdist(tmp_path / "b.tar.gz", {"epistemic_reasoning": 5})
    with pytest.raises(TaskDataError, match="no_such_task"):
        bigbench.fetch(("no_such_task",), sdist)
    with pytest.raises(TaskDataError, match="no such file"):
        bigbench.fetch(("epistemic_reasoning",), tmp_path / "absent.tar.gz")


def test_a_task_json_that_is_not_classification_is_refused(cache):
    d = cache / "gen"
    d.mkdir(parents=True)
    (d / "task.json").write_text(json.dumps({"examples": [{"input": "q", "target": "free text"}]}))
    with pytest.raises(TaskDataError, match="not a classification task"):
        T.get("bigbench:gen")
    (d / "task.json").write_text("{not json")
    with pytest.raises(TaskDataError, match="not a readable"):
        T.get("bigbench:gen")
