"""The red team on a Hugging Face transformer (tiny random BERT): optimizers over an LR grid with the text
setting's linear schedule, transforms that apply, and transforms that say why they do not."""

import pytest

from trainlock.redteam import RunnerConfig

pytest.importorskip("transformers")

import trainlock as tl  # noqa: E402
from hf_tiny import tiny, toy_task  # noqa: E402
from trainlock.redteam import RedTeamConfig  # noqa: E402
from trainlock.train import LoopConfig  # noqa: E402


def test_redteam_runs_on_a_transformer(tmp_path):
    model = tiny("bert", init=0.3)
    task = toy_task(120)
    cfg = RedTeamConfig(loop=LoopConfig(max_steps=4, batch_size=16, schedule="linear", device="cpu"), runner=RunnerConfig(workers=0),
                        optimizers=("adamw", "sgd"), lrs=(1e-4, 1e-2), transforms=("merge", "rescale", "sv-clip"))
    res = tl.redteam(model, task, cfg, out=tmp_path / "rt", retain=task)
    rows = res["runs"]
    assert rows and not [r for r in rows if r.get("error")], [r.get("error") for r in rows]
    by = {r["attack"]: r for r in rows}
    assert {"adamw@0.0001", "adamw@0.01", "sgd@0.0001", "sgd@0.01"} <= set(by)
    backdoor = [r for r in rows if r["attack"].endswith("[backdoor]")]
    assert backdoor and "text (token) triggers are not implemented" in backdoor[0]["skipped"]
    assert all(r["config"]["schedule"] == "linear" for r in rows)
    rescale = [r for r in rows if r["attack"].startswith("rescale+")]
    assert rescale and all("positively homogeneous" in r["skipped"] for r in rescale)  # GELU: says why not
    merged = next(r for r in rows if r["attack"].startswith("merge+"))
    assert merged["skipped"] is None and "balanced" in " ".join(merged["notes"])
    assert merged["authorized_after_transform"] == pytest.approx(tl.evaluate(model, task), abs=1e-9)
    assert res["worst"]["accuracy"] == max(r["accuracy"] for r in rows if r.get("accuracy") is not None)
    assert (tmp_path / "rt" / "report.md").is_file()
