import json

import pytest
import torch
import torch.nn as nn

import trainlock as tl
from trainlock.io.artifacts import META, WEIGHTS, ArtifactError, load, read_meta, save
from trainlock.locks import specdef_loop


def _model():
    return tl.models.build("cnn", input_shape=[1, 8, 8], num_classes=5, channels=[4, 8], hidden=16)


def test_round_trip_is_bit_exact(tmp_path):
    model = _model()
    save(model, tmp_path / "m", {"task": "digits", "metrics": {"accuracy": 0.5}})
    loaded, meta = load(tmp_path / "m")
    assert type(loaded) is type(model)
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=False):
        assert k == k2 and torch.equal(a, b)
    assert meta["task"] == "digits" and meta["trainlock_version"] == tl.__version__
    assert meta["architecture"]["name"] == "cnn"


def test_no_pickle_only_safetensors_and_json(tmp_path):
    save(_model(), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([WEIGHTS, META])
    assert json.loads((tmp_path / META).read_text())["format"] == 1


def test_custom_module_needs_the_model(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    save(model, tmp_path)
    with pytest.raises(ArtifactError, match="custom model"):
        load(tmp_path)
    fresh = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    loaded, _ = load(tmp_path, model=fresh)
    assert torch.equal(loaded[0].weight, model[0].weight)


def test_truncated_weights_are_caught(tmp_path):
    save(_model(), tmp_path)
    data = (tmp_path / WEIGHTS).read_bytes()
    (tmp_path / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="SHA-256"):
        load(tmp_path)


def test_corrupt_weights_without_recorded_hash(tmp_path):
    save(_model(), tmp_path)
    meta = json.loads((tmp_path / META).read_text())
    del meta["weights_sha256"]
    (tmp_path / META).write_text(json.dumps(meta))
    (tmp_path / WEIGHTS).write_bytes(b"\x00\x01garbage")
    with pytest.raises(ArtifactError, match="unreadable safetensors"):
        load(tmp_path)


def test_bad_json_and_missing_files(tmp_path):
    with pytest.raises(ArtifactError, match="not a model directory"):
        load(tmp_path / "nope")
    save(_model(), tmp_path)
    (tmp_path / META).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_meta(tmp_path)
    (tmp_path / META).unlink()
    with pytest.raises(ArtifactError, match=r"missing trainlock.json"):
        load(tmp_path)


def test_weights_that_do_not_fit(tmp_path):
    save(_model(), tmp_path)
    other = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ArtifactError, match="do not fit"):
        load(tmp_path, model=other)


def test_lock_summary_travels_with_the_model(tmp_path, digits):
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[16])
    res = tl.lock(model, tl.SpecDefConfig(loop=specdef_loop(max_steps=3, device="cpu")), retain=digits)
    assert not hasattr(res.model, "trainlock_lock")  # the summary travels in the record, not on the model
    save(res.model, tmp_path, {"task": "digits", **res.record})
    loaded, meta = load(tmp_path)
    assert meta["lock"]["type"] == "specdef" and meta["lock"]["config"]["alpha"] == 0.5
    assert meta["lock"]["sigma_after"]["mean_topk"] > 0
    assert meta["lock"] == json.loads(json.dumps(res.record["lock"]))  # round-trips unchanged
    assert not hasattr(loaded, "trainlock_lock")  # load() sets no attribute on the model
    save(loaded, tmp_path / "again", {"task": "digits"})  # nor does save() read one: no record, no summary
    assert "lock" not in read_meta(tmp_path / "again")
