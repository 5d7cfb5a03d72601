"""BIG-bench JSON tasks as text classification tasks, offline, from a one-time local cache.

The `bigbench==1.0.0` source package (Apache-2.0) holds every BIG-bench task as
`bigbench/benchmark_tasks/<task>/task.json`: examples with an `input` and `target_scores`
({answer: score}). It is a 358 MB download, so trainlock never imports it: `trainlock fetch bigbench`
runs `pip download` once and extracts only the task directories used, into
`$TRAINLOCK_DATA/bigbench/<task>/` (default `~/.cache/trainlock/bigbench/`); nothing is downloaded
when a task is loaded.

A task's label is the answer with the highest score (examples without a single best answer are
dropped and counted); the label set is every answer seen, sorted; the split is the package's none,
so a seeded 80/20 one. Sentence-pair tasks keep both sentences in `input`, as BIG-bench writes them
(e.g. "Premise: ... Hypothesis: ..."). Tasks with subtasks read every `task.json` under the task's
directory.

Built in, standing in for GLUE's pair tasks: `bb-vitaminc` (claim vs evidence: supports / refutes /
not enough info), `bb-epistemic` (entailment vs non-entailment), `bb-movie-dialog` (same or different
speaker), `bb-presuppositions` (NLI); any other task as `bigbench:TASK`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

from .base import TaskDataError

SDIST = "bigbench==1.0.0"
ALIASES = {
    "bb-vitaminc": ("vitaminc_fact_verification", "BIG-bench VitaminC: does the evidence support the claim"),
    "bb-epistemic": ("epistemic_reasoning", "BIG-bench epistemic reasoning: entailment vs non-entailment"),
    "bb-movie-dialog": ("movie_dialog_same_or_different", "BIG-bench movie dialog: same or different speaker"),
    "bb-presuppositions": ("presuppositions_as_nli", "BIG-bench presuppositions as NLI"),
}
# also fetched by default: the data of tasks.extra's cifar10-bb (images) and jailbreak (benign questions)
DEFAULT_TASKS = (*tuple(t for t, _ in ALIASES.values()), "cifar10_classification", "strategyqa", "truthful_qa")


def cache_dir() -> Path:
    """Where extracted BIG-bench tasks live: $TRAINLOCK_DATA/bigbench, or ~/.cache/trainlock/bigbench."""
    root = os.environ.get("TRAINLOCK_DATA") or Path.home() / ".cache" / "trainlock"
    return Path(root) / "bigbench"


def fetch_hint(task: str | None = None) -> str:
    extra = f" --tasks {task}" if task and task not in DEFAULT_TASKS else ""
    return (
        f"trainlock fetch bigbench{extra}   (runs once: pip download --no-deps --no-build-isolation {SDIST}, "
        f"which needs setuptools and wheel installed, then extracts benchmark_tasks/<task>/ into {cache_dir()})"
    )


def present(task: str) -> bool:
    return any((cache_dir() / task).rglob("task.json"))


def _label(scores: dict) -> str | None:
    if not isinstance(scores, dict) or not scores:
        return None
    best = max(scores.values())
    top = [k for k, v in scores.items() if v == best]
    return str(top[0]) if len(top) == 1 else None


def load(task: str, name: str | None = None):
    """The TextTask of BIG-bench task `task` (a directory name under benchmark_tasks), from the cache."""
    from .text import from_rows

    root = cache_dir() / task
    files = sorted(root.rglob("task.json")) if root.is_dir() else []
    if not files:
        raise TaskDataError(f"BIG-bench task {task!r} is not in {cache_dir()}; fetch it once with: {fetch_hint(task)}")
    rows, dropped = [], 0
    for f in files:
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TaskDataError(f"{f}: not a readable BIG-bench task.json ({e})") from None
        for _i, ex in enumerate(data.get("examples", [])):
            label = _label(ex.get("target_scores"))
            if label is None or not isinstance(ex.get("input"), str) or not ex["input"].strip():
                dropped += 1
                continue
            rows.append({"text": ex["input"], "label": label})
    if not rows:
        raise TaskDataError(
            f"BIG-bench task {task!r} ({root}) has no example with an input and a single best "
            f"target score: not a classification task"
        )
    t = from_rows(name or f"bigbench:{task}", rows, str(root), f"BIG-bench {task}")
    t.meta["dropped_examples"] = dropped
    return t


def fetch(tasks: tuple[str, ...] = DEFAULT_TASKS, sdist: str | Path | None = None) -> list[Path]:
    """Extract `tasks` into the cache from `sdist` (a bigbench-1.0.0.tar.gz), downloading it first with pip
    when none is given. Returns the task directories written. Raises TaskDataError with what went wrong."""
    dest = cache_dir()
    if sdist is None:
        dl = dest / "downloads"
        found = sorted(dl.glob("bigbench-*.tar.gz")) if dl.is_dir() else []
        if not found:
            dl.mkdir(parents=True, exist_ok=True)
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation", SDIST, "-d", str(dl)]
            if subprocess.run(cmd).returncode != 0:
                raise TaskDataError(
                    f"pip download failed: {' '.join(cmd)} (it needs network access to PyPI and "
                    f"setuptools and wheel installed)"
                )
            found = sorted(dl.glob("bigbench-*.tar.gz"))
            if not found:
                raise TaskDataError(f"pip download wrote no bigbench-*.tar.gz into {dl}")
        sdist = found[-1]
    sdist = Path(sdist)
    if not sdist.is_file():
        raise TaskDataError(f"--sdist: no such file: {sdist}")
    want = {t: f"/bigbench/benchmark_tasks/{t}/" for t in tasks}
    written: dict[str, Path] = {}
    try:
        tar = tarfile.open(sdist, "r:*")  # noqa: SIM115  (closed below, after the extraction)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise TaskDataError(
            f"--sdist: {sdist} is not a readable tar archive; give the bigbench-1.0.0.tar.gz source package "
            f"({type(e).__name__})"
        ) from None
    try:
        _extract(tar, want, dest, written)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        raise TaskDataError(f"--sdist: {sdist} is truncated or corrupt ({type(e).__name__}: {e})") from None
    finally:
        tar.close()
    missing = [t for t in tasks if t not in written]
    if missing:
        raise TaskDataError(
            f"{sdist} holds no benchmark_tasks/ directory for {missing}; check the task names "
            f"(directory names under bigbench/benchmark_tasks)"
        )
    return [written[t] for t in tasks]


def _extract(tar, want: dict[str, str], dest: Path, written: dict[str, Path]) -> None:
    """Extract the members under each wanted task directory into dest/TASK (no path leaves it)."""
    for member in tar:
        if not member.isfile():
            continue
        for t, part in want.items():
            i = member.name.find(part)
            if i < 0:
                continue
            rel = Path(member.name[i + len(part) :])
            if ".." in rel.parts or rel.is_absolute():
                continue
            out = dest / t / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            tmp = out.with_name(out.name + ".part")
            tmp.write_bytes(src.read())
            tmp.replace(out)
            written[t] = dest / t


def _register() -> None:
    from .base import TASKS, TaskSpec

    for alias, (task, desc) in ALIASES.items():
        TASKS.add(
            alias,
            TaskSpec(alias, lambda t=task, a=alias: load(t, a), lambda t=task: present(t), fetch_hint(task), desc),
        )


_register()
