"""Issue 24 (reliability v3), resources and writers: --workers is capped on the local backend and workers die with
a killed parent; every writing command holds its output lock from before its work; save refuses what it must not
write and cleans up after killed saves; redteam's exit code and retries; --storage checked first; diagnose never
writes into its input; the public release is world-readable and a bound model card."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import trainlock as tl
from trainlock.certify.verify import verify
from trainlock.cli import main
from trainlock.io.artifacts import ArtifactError
from trainlock.io.release import release
from trainlock.locks import specdef_loop
from trainlock.red_team import RunnerConfig, runner
from trainlock.red_team.row import RunRow, read_rows

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
TOO_MANY = str(2 * (os.cpu_count() or 1) + 1)


@pytest.fixture
def model_dir(tiny_base, tmp_path):
    return tl.save(tiny_base, tmp_path / "base", {"task": "digits"})


def _one_line_error(capsys, *words):
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("error: "), err
    for w in words:
        assert w in err, err
    return err


# ---------------------------------------------------------------- 1. resources


@pytest.mark.parametrize(
    "argv",
    [
        ["redteam", "{m}", "--task", "digits", "--out", "{t}/rt"],
        ["headstart", "{m}", "--task", "digits", "--out", "{t}/hs"],
        ["tune", "{m}", "--attack-task", "digits", "--out", "{t}/tu"],
        ["locks", "--run", "{m}", "--specs", '{{"base": null}}', "--attack-tasks", "digits", "--out", "{t}/lt"],
        ["reproduce", "table2", "--out", "{t}/rp"],
    ],
    ids=lambda a: a[0],
)
def test_workers_beyond_twice_the_cpus_are_refused_before_any_work(argv, model_dir, tmp_path, capsys):
    argv = [a.format(m=model_dir, t=tmp_path) for a in argv]
    t0 = time.time()
    assert main([*argv, "--workers", TOO_MANY]) == 2
    assert time.time() - t0 < 5
    _one_line_error(capsys, "workers", "--backend ray")
    assert not any(p.name in ("rt", "hs", "tu", "lt", "rp") for p in tmp_path.iterdir())  # no output begun


def test_the_cap_is_the_local_backends_only():
    with pytest.raises(ValueError, match="more only with --backend ray"):
        RunnerConfig(workers=int(TOO_MANY))
    assert RunnerConfig(workers=int(TOO_MANY) - 1).workers == int(TOO_MANY) - 1
    assert RunnerConfig(backend="ray", workers=10**5).workers == 10**5  # a cluster may have that many CPUs


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of process group `pgid`, read from /proc."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":  # state, ppid, pgrp
                out.append(int(stat.parent.name))
    return out


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc")
def test_kill_9_of_a_redteam_leaves_no_worker(model_dir, tmp_path):
    argv = [sys.executable, "-m", "trainlock.cli.main", "redteam", str(model_dir), "--task", "digits"]
    argv += ["--out", str(tmp_path / "rt"), "--workers", "2", "--max-steps", "400", "--batch-size", "16"]
    argv += ["--budget", "8", "--references"]
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(_children(proc.pid)) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            time.sleep(0.05)
        workers = _children(proc.pid)
        assert len(workers) >= 2, "no pool appeared"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 5
        while time.time() < deadline and _group(proc.pid):
            time.sleep(0.1)
        assert not _group(proc.pid), f"left behind: {_group(proc.pid)}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


# ---------------------------------------------------------------- 2. concurrent writers


def test_two_locks_on_one_out_the_second_is_refused_at_once(model_dir, tmp_path, capsys):
    out = tmp_path / "locked"
    lock = ["lock", str(model_dir), "--out", str(out), "--epochs", "3", "--batch-size", "32", "--lr", "1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "trainlock.cli.main", *lock],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not (tmp_path / ".locked.lock").exists():
            assert first.poll() is None, first.stderr.read().decode()[-2000:]
            time.sleep(0.02)
        assert not out.exists(), "the first run should hold its output before it wrote anything"
        t0 = time.time()
        assert main(lock) == 2  # the second: refused at once, while the first works
        assert time.time() - t0 < 5
        _one_line_error(capsys, "being written by another trainlock process", f"pid {first.pid}")
        assert first.wait(timeout=120) == 0, first.stderr.read().decode()[-2000:]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    before = (out / "model.safetensors").read_bytes()
    assert main(lock) == 2  # after it: the output is not empty
    _one_line_error(capsys, "not empty", "--overwrite")
    assert (out / "model.safetensors").read_bytes() == before
    assert not (tmp_path / ".locked.lock").exists()  # released when the command ended


def test_save_over_a_plain_file_is_refused_and_moves_nothing(tiny_base, tmp_path):
    f = tmp_path / "afile"
    f.write_text("mine")
    with pytest.raises(ValueError, match="not a directory"):
        tl.save(tiny_base, f, {})
    assert f.read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["afile"]


def test_save_refuses_a_record_that_load_would_refuse(tiny_base, tmp_path):
    with pytest.raises(ValueError, match="'task' must be a task name"):
        tl.save(tiny_base, tmp_path / "m", {"task": 7})
    with pytest.raises(ValueError, match="'metrics' must be an object"):
        tl.save(tiny_base, tmp_path / "m", {"metrics": [1]})
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary left


def test_after_killed_saves_the_hint_names_only_a_loadable_copy_and_the_next_save_cleans_up(tiny_base, tmp_path):
    path = tmp_path / "m"
    complete = tl.save(tiny_base, tmp_path / "src", {"task": "digits"})
    # what kill -9 leaves: a complete copy (killed between its two renames), then a newer empty one and a
    # half-written one (killed while building), and the old directory's copy
    shutil.copytree(complete, tmp_path / ".m.new-abcd1234")
    os.utime(tmp_path / ".m.new-abcd1234", (1, 1))
    (tmp_path / ".m.new-zzzz0000").mkdir()
    (tmp_path / ".m.new-half0000").mkdir()
    (tmp_path / ".m.new-half0000" / "model.safetensors").write_bytes(b"\0" * 10)
    (tmp_path / ".m.old-oooo0000").mkdir()
    with pytest.raises(ArtifactError) as e:
        tl.load(path)
    assert str(e.value).endswith(f"is at {tmp_path / '.m.new-abcd1234'}"), str(e.value)
    shutil.rmtree(tmp_path / ".m.new-abcd1234")
    with pytest.raises(ArtifactError) as e:
        tl.load(path)
    assert "interrupted save" not in str(e.value)  # no hint at an empty or half-written copy
    tl.save(tiny_base, path, {"task": "digits"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "src"]
    tl.load(path)


def test_the_output_lock_nests_in_one_process_and_excludes_others(tmp_path):
    from trainlock.atomic import Busy, exclusive

    out = tmp_path / "o"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom trainlock.atomic import exclusive\nwith exclusive(sys.argv[1]):\n"
            "    with exclusive(sys.argv[1]):\n        print('in', flush=True)\n    print('held', flush=True)\n"
            "    time.sleep(30)\n",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"in" and holder.stdout.readline().strip() == b"held"
        with pytest.raises(Busy), exclusive(out):  # the inner block's end did not release the outer one
            pass
    finally:
        holder.kill()
        holder.wait()
    with exclusive(out), exclusive(out):
        pass
    assert not (tmp_path / ".o.lock").exists()


# ---------------------------------------------------------------- 3. redteam exit code, retries, --storage

RT = ["--task", "digits", "--budget", "4", "--max-steps", "4", "--batch-size", "32", "--workers", "0", "--references"]


def test_redteam_exits_1_when_no_run_completed_and_a_rerun_retries_only_errored_rows(
    model_dir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "rt"
    calls = []

    def failing(target, spec):
        calls.append(spec.key())
        if len(calls) % 2:
            raise RuntimeError("boom")
        row = RunRow.of(spec)
        row.skipped = "does not apply here"
        return row

    monkeypatch.setattr(runner, "run_spec", failing)
    assert main(["redteam", str(model_dir), *RT, "--out", str(out)]) == 1
    assert "no run completed" in capsys.readouterr().out
    first = read_rows(out / "runs.jsonl")
    errored = {r["key"] for r in first if r.get("error")}
    skipped = {r["key"] for r in first if r.get("skipped")}
    assert errored and skipped and len(first) == len(errored) + len(skipped)  # each tried once in the call
    monkeypatch.undo()
    assert main(["redteam", str(model_dir), *RT, "--out", str(out)]) == 0
    rows = read_rows(out / "runs.jsonl")
    assert rows[: len(first)] == first  # the old rows stay in the file
    counts = {k: sum(r["key"] == k for r in rows) for k in errored | skipped}
    assert all(counts[k] == 2 for k in errored) and all(counts[k] == 1 for k in skipped), counts
    last = {r["key"]: r for r in rows}  # on read the last row of a key wins
    assert not any(last[k].get("error") for k in errored)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["worst"] is not None


@pytest.mark.parametrize("url", ["bogus://x", "not a url", "sqlite:///{t}/no/such/dir/s.db", "sqlite:///{t}/junk.db"])
def test_a_bad_storage_url_is_refused_before_the_suite(url, model_dir, tmp_path, capsys):
    (tmp_path / "junk.db").write_text("not a database at all " * 10)
    url = url.format(t=tmp_path)
    out = tmp_path / "rt"
    t0 = time.time()
    argv = ["redteam", str(model_dir), *RT, "--out", str(out), "--search-trials", "2", "--storage", url]
    assert main(argv) == 2
    assert time.time() - t0 < 10
    _one_line_error(capsys, "--storage")
    assert not (out / "runs.jsonl").exists()


def test_tune_checks_its_storage_first(model_dir, tmp_path, capsys):
    argv = ["tune", str(model_dir), "--attack-task", "digits", "--out", str(tmp_path / "tu"), "--storage", "bogus://"]
    assert main(argv) == 2
    _one_line_error(capsys, "--storage", "unknown database scheme")
    assert not (tmp_path / "tu" / "tune.db").exists()


# ---------------------------------------------------------------- 4. diagnose


def test_diagnose_never_writes_into_its_input(model_dir, tmp_path, capsys):
    before = sorted(p.name for p in model_dir.iterdir())
    for out in (model_dir, model_dir / "plots"):
        assert main(["diagnose", str(model_dir), "--samples", "8", "--out", str(out)]) == 2
        _one_line_error(capsys, "--out")
    assert sorted(p.name for p in model_dir.iterdir()) == before
    assert verify(model_dir).ok


# ---------------------------------------------------------------- 5. the public release


@pytest.fixture
def owner(tiny_base, digits, tmp_path):
    res = tl.lock(
        tiny_base, tl.SpecDefConfig(loop=specdef_loop(lr=10.0, epochs=1, batch_size=64, device="cpu")), retain=digits
    )
    return tl.save(res.model, tmp_path / "owner", {"task": "digits", "base": "runs/base", **res.record})


def test_the_release_is_world_readable_and_a_bound_model_card(owner, tmp_path, capsys):
    rt = tmp_path / "rt"
    assert main(["redteam", str(owner), *RT, "--out", str(rt)]) == 0
    pub = tmp_path / "pub"
    assert main(["release", str(owner), "--out", str(pub), "--redteam", str(rt)]) == 0
    assert pub.stat().st_mode & 0o777 == 0o755
    assert {p.name: p.stat().st_mode & 0o777 for p in pub.iterdir()} == {
        "model.safetensors": 0o644,
        "trainlock.json": 0o644,
        "README.md": 0o644,
    }
    card = (pub / "README.md").read_text()
    meta = json.loads((pub / "trainlock.json").read_text())
    summary = json.loads((rt / "summary.json").read_text())
    cert = meta["certificates"][0]
    assert "## What the lock claims" in card and f"| {cert['lock']} | {cert['invariant']} |" in card
    assert "0: 0, 1: 1" in card and meta["release"]["labels"] == [str(i) for i in range(10)]
    assert "## Red team" in card and summary["worst"]["attack"] in card
    assert f"{100 * summary['uplift']:+.1f} points" in card and summary["reference"]["attacker"] in card
    assert f"{summary['budget']['steps_per_run']} steps per run" in card
    assert meta["release"]["redteam"]["uplift"] == summary["uplift"] and meta["release"]["redteam"]["date"] in card
    assert meta["release"]["card_sha256"] == hashlib.sha256(card.encode()).hexdigest()
    report = verify(pub)
    assert [r.holds for r in report.rows if r.subject == "model card README.md"] == [True]
    (pub / "README.md").write_text(card.replace("## Red team", "## Red team\n\nUnbreakable."))
    report = verify(pub)
    assert [r.holds for r in report.rows if r.subject == "model card README.md"] == [False] and not report.ok
    (pub / "README.md").unlink()
    assert not verify(pub).ok


def test_release_refuses_the_red_team_of_another_model(owner, model_dir, tmp_path, capsys):
    rt = tmp_path / "rt-base"
    assert main(["redteam", str(model_dir), *RT, "--out", str(rt)]) == 0
    capsys.readouterr()
    assert main(["release", str(owner), "--out", str(tmp_path / "pub"), "--redteam", str(rt)]) == 2
    _one_line_error(capsys, "another model")
    (tmp_path / "empty").mkdir()
    assert main(["release", str(owner), "--out", str(tmp_path / "pub"), "--redteam", str(tmp_path / "empty")]) == 2
    _one_line_error(capsys, "summary.json")
    assert not (tmp_path / "pub").exists()


def test_a_hugging_face_release_names_its_labels_in_config_json(tmp_path):
    pytest.importorskip("transformers")
    from hf_tiny import tiny

    owner = tl.save(tiny("bert"), tmp_path / "owner", {"task": "toy"})
    path, meta = release(owner, tmp_path / "pub", labels=["neg", "pos"])
    assert meta["release"]["labels"] == ["neg", "pos"] and meta["release"]["card_sha256"]
    config = json.loads((path / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["label2id"] == {"neg": 0, "pos": 1}
    assert "0: neg, 1: pos" in (path / "README.md").read_text()
    assert all(p.stat().st_mode & 0o777 == 0o644 for p in path.iterdir() if p.is_file())
    model, _ = tl.load(path)
    assert model.model.config.id2label == {0: "neg", 1: "pos"}
    report = verify(path)
    assert report.ok and [r.holds for r in report.rows if r.subject == "model card README.md"] == [True], report.table()
    with pytest.raises(ValueError, match="names 3 classes"):
        release(owner, tmp_path / "pub2", labels=["a", "b", "c"])


@pytest.mark.parametrize("command", ["keygen", "sign", "fetch"])
def test_keygen_sign_and_fetch_take_their_output_lock_first(command, model_dir, tmp_path, monkeypatch, capsys):
    """The issue's "sign, keygen and fetch take no output lock": each now refuses at once, one line, while another
    process writes its output (the key directory, the model directory, the BIG-bench cache), and writes nothing."""
    from trainlock.tasks import bigbench

    monkeypatch.setattr(bigbench, "cache_dir", lambda: tmp_path / "cache" / "bigbench")
    keys = tmp_path / "keys"
    target = {"keygen": keys, "sign": Path(model_dir), "fetch": tmp_path / "cache" / "bigbench"}[command]
    argv = {
        "keygen": ["keygen", "--out", str(keys)],
        "sign": ["sign", str(model_dir), "--key", str(tmp_path / "nokey.pem")],
        "fetch": ["fetch", "bigbench", "--tasks", "cifar10_classification", "--sdist", str(tmp_path / "none.tar.gz")],
    }[command]
    before = sorted(p.name for p in Path(model_dir).iterdir())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom trainlock.atomic import exclusive\nwith exclusive(sys.argv[1]):\n"
            "    print('held', flush=True)\n    time.sleep(30)\n",
            str(target),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        assert main(argv) == 2
        _one_line_error(capsys, "being written by another trainlock process")
    finally:
        holder.kill()
        holder.wait()
    assert not keys.exists() and sorted(p.name for p in Path(model_dir).iterdir()) == before


@pytest.mark.parametrize("field,value", [("cpus_per_run", 0.0), ("cpus_per_run", 1e30), ("gpus_per_run", 1e30)])
def test_per_run_reservations_are_checked_before_any_work(field, value):
    """--cpus-per-run 0 and 1e30 were accepted (the local backend ignores them; Ray rejects them after starting)."""
    with pytest.raises(ValueError, match=field):
        RunnerConfig(**{field: value})
    assert RunnerConfig(gpus_per_run=0.0, cpus_per_run=0.5).cpus_per_run == 0.5
