"""Config fields marked `option(..., private=True)`: listed in the saved lock entry, left out of the public copy
(`trainlock release`), also inside a composite; the owner's copy keeps them and both copies verify."""

import json
from dataclasses import dataclass

import torch.nn as nn

import trainlock as tl
from trainlock.certify.verify import verify
from trainlock.config import option
from trainlock.io.release import public_meta, release
from trainlock.locks import LOCKS, BaseLock, Certificate, Locked, lock_from_meta, register_lock
from trainlock.locks.base import private_fields
from trainlock.train import clone_model

NAME = "test-private-salted"  # registered once, here, for these tests only
SALT = 987654321


@dataclass
class SaltedConfig:
    scale: float = option(1.0, "a public setting")
    salt: int = option(7, "a setting the owner keeps to themselves", private=True)


@dataclass
class SaltedRecord:
    params: int | None = option(None, "number of parameters at lock time")


@register_lock(NAME, SaltedConfig, example={"scale": 2.0, "salt": 3})
class SaltedLock(BaseLock):
    """A throwaway lock: claims the parameter count; its private `salt` plays no part in the claim."""

    record_cls = SaltedRecord

    def apply(self, model: nn.Module, retain=None, *, progress=False, checkpoint=None) -> Locked:
        locked = clone_model(model)
        return Locked(locked, SaltedRecord(sum(p.numel() for p in locked.parameters())))

    def certify(self, model: nn.Module, record: SaltedRecord) -> list[Certificate]:
        return [
            Certificate(
                lock=self.name,
                invariant="number of parameters",
                measured=float(sum(p.numel() for p in model.parameters())),
                required=float(record.params),
                relation="==",
                proof_of_gap="test",
                preservation="test",
                threat_model="training-time",
                adversary_can_remove=True,
                removal="test",
                method="count",
            )
        ]


def test_the_private_field_is_marked_on_the_config():
    assert private_fields(SaltedConfig) == {"salt"} and LOCKS.get(NAME).config_cls is SaltedConfig
    assert private_fields(LOCKS.get("frozen").config_cls) == set()


def test_private_fields_are_listed_and_dropped_from_the_public_copy(tiny_base, tmp_path):
    res = tl.lock(tiny_base, SaltedConfig(scale=2.0, salt=SALT))
    (entry,) = res.record["locks"]
    assert entry["type"] == NAME and entry["private"] == ["salt"] and "plugin" not in entry
    assert entry["config"] == {"scale": 2.0, "salt": SALT}  # the owner's record keeps the value
    meta = {"task": "digits", **res.record}
    saved = json.loads(json.dumps(meta))
    pub = public_meta(meta)
    assert meta == saved  # public_meta does not modify its input
    (pub_entry,) = pub["locks"]
    assert pub_entry["config"] == {"scale": 2.0} and pub_entry["private_dropped"] == ["salt"]
    assert "private" not in pub_entry and pub_entry["record"] == entry["record"]
    assert str(SALT) not in json.dumps(pub)
    # the public entry still rebuilds a lock (the dropped field at its default) whose certificate holds
    again = lock_from_meta(pub)
    assert again.lock.cfg.salt == SaltedConfig().salt and all(c.holds for c in again.certify(res.model))
    # and through `release`: the public copy verifies, the owner's keeps the field
    owner = tl.save(res.model, tmp_path / "owner", meta)
    out, pub_meta = release(owner, tmp_path / "public")
    assert pub_meta["locks"][0]["config"] == {"scale": 2.0} and str(SALT) not in (out / "trainlock.json").read_text()
    assert str(SALT) in (owner / "trainlock.json").read_text()
    report = verify(out)
    assert report.ok, report.table()


def test_private_fields_of_a_composites_children_are_dropped_too(tiny_base):
    res = tl.lock(tiny_base, [{"type": "architecture"}, {"type": NAME, "salt": SALT}])
    (entry,) = res.record["locks"]
    assert entry["type"] == "composite" and entry["config"]["locks"][1]["salt"] == SALT
    assert entry["private"] == ["locks.1.salt"]
    (pub_entry,) = public_meta({"task": "digits", **res.record})["locks"]
    assert pub_entry["config"]["locks"] == [{"type": "architecture"}, {"type": NAME, "scale": 1.0}]
    assert pub_entry["private_dropped"] == ["locks.1.salt"] and str(SALT) not in json.dumps(pub_entry)
    again = lock_from_meta({"locks": [pub_entry]})
    assert all(c.holds for c in again.certify(res.model))
