"""`trainlock release`: the public copy keeps weights and re-checkable certificates, drops the private record."""

import json

import torch

import trainlock as tl
from trainlock.certify.verify import verify
from trainlock.cli import main
from trainlock.locks import specdef_loop


def test_release_strips_private_fields_and_still_verifies(tiny_base, digits, tmp_path):
    res = tl.lock(
        tiny_base, tl.SpecDefConfig(loop=specdef_loop(lr=10.0, epochs=1, batch_size=64, device="cpu")), retain=digits
    )
    owner = tl.save(res.model, tmp_path / "owner", {"task": "digits", "base": "runs/base", **res.record})
    before = json.loads((owner / "trainlock.json").read_text())
    assert "sigma_before" in before["lock"] and "feature_drift" in before["conservation"]
    assert main(["release", str(owner), "--out", str(tmp_path / "public")]) == 0
    pub = json.loads((tmp_path / "public" / "trainlock.json").read_text())
    text = json.dumps({k: v for k, v in pub.items() if k != "release"})  # "release" names what was dropped
    assert "sigma_before" not in text and "history" not in text and "feature_drift" not in text
    assert "lock" not in pub and "base" not in pub and pub["release"]["public"] is True
    assert set(pub["release"]["dropped"]) == {"lock", "base", "conservation.feature_drift", "conservation.progress"}
    assert pub["locks"] == before["locks"] and pub["certificates"] == before["certificates"]
    a, _ = tl.load(owner)
    b, _ = tl.load(tmp_path / "public")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=False))
    # the lock's record lives in the metadata only (no model attribute): the public copy has none for the
    # insider sv-clip to read
    assert not hasattr(a, "trainlock_lock") and not hasattr(b, "trainlock_lock")
    assert "lock" not in tl.load(tmp_path / "public")[1] and "sigma_before" in tl.load(owner)[1]["lock"]
    rep_pub, rep_owner = verify(tmp_path / "public"), verify(owner)
    fails = lambda rep: sorted((r.check, r.subject) for r in rep.failures)
    assert fails(rep_pub) == fails(rep_owner) and all(c == "conservation" for c, _ in fails(rep_pub)), rep_pub.table()
    assert [r for r in rep_pub.rows if r.check == "lock"] and all(r.holds for r in rep_pub.rows if r.check == "lock")
    assert any(r.check == "release" and r.subject == "public copy" for r in rep_pub.rows)
    assert any(r.check == "release" and r.subject == "owner's copy" for r in rep_owner.rows)
    assert json.loads((owner / "trainlock.json").read_text()) == before  # the owner's copy is untouched
    assert main(["release", str(tmp_path / "public"), "--out", str(tmp_path / "again")]) != 0
