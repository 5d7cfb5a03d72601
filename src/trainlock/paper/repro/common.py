"""What every table and figure reproduction shares: a resumable run store, cached intermediate models,
verdicts and plots (markdown tables: `trainlock.io.tables.markdown_table`).

A reproduction writes into one directory:

    results.json   {"name", "quick", "device", "params", "runs": {key: row}, "summary": {...}}
    table.md       the paper's numbers beside ours, the scratch baseline and the red team's worst case
    models/NAME/   the models it trained on the way (safetensors + JSON), reused by a rerun
    *.png          plots like the paper's

Every run is stored under a key as soon as it finishes; a rerun with the same settings skips finished
runs and reloads cached models, so an interrupted reproduction resumes where it stopped. A directory
written with other settings (quick vs full, other params) is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from ..._version import __version__
from ...atomic import write_text, writing_file
from ...io.artifacts import load, save
from ...tasks import Task

logger = logging.getLogger(__name__)

RESULTS = "results.json"


def json_safe(x):
    """`x` with non-finite floats as strings and tuples as lists (json.dumps would write NaN)."""
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


class Study:
    """One reproduction's directory: runs stored by key as they finish, cached models, the final summary."""

    def __init__(self, name: str, out: str | Path, quick: bool, device: str, params: dict, runner=None):
        self.name, self.out, self.quick, self.device = name, Path(out), quick, device
        self.runner = runner  # where red-team runs execute (a RunnerConfig; None: the local default); not a setting
        self.params = json.loads(json.dumps(json_safe(params)))  # as it will read back from disk
        self.out.mkdir(parents=True, exist_ok=True)
        self.runs: dict[str, dict] = {}
        path = self.out / RESULTS
        if path.is_file():
            try:
                old = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} is not readable JSON ({e}); choose another --out or delete it") from None
            mine = {"name": name, "quick": quick, "params": self.params}
            theirs = {k: old.get(k) for k in mine}
            if theirs != mine:
                differ = [k for k in mine if mine[k] != theirs[k]]
                raise ValueError(
                    f"{self.out} holds a {old.get('name')} reproduction with other settings "
                    f"({', '.join(differ)} differ); choose another --out or delete it to start over"
                )
            self.runs = old.get("runs", {})
            if self.runs:
                logger.info("%s: resuming, %d runs already done", self.out, len(self.runs))
        self.t0 = time.perf_counter()

    def run(self, key: str, fn: Callable[[], dict]) -> dict:
        """The row stored under `key`; computed by `fn()` (and stored with its wall time) if missing."""
        if key in self.runs:
            return self.runs[key]
        t0 = time.perf_counter()
        row = fn()
        row.setdefault("wall_s", time.perf_counter() - t0)
        self.runs[key] = json.loads(json.dumps(json_safe(row)))
        self._write()
        logger.info("%s: %s done (%.0f s)", self.name, key, row["wall_s"])
        return self.runs[key]

    def model(
        self, name: str, build: Callable[[], tuple[nn.Module, dict]], shared: dict | None = None
    ) -> tuple[nn.Module, dict]:
        """A model cached under models/NAME: loaded if there, else `build()` -> (model, meta), saved, returned.
        With `shared` (the settings that determine the model), the cache is ../shared-models/NAME-<hash> beside
        this directory, so reproductions under one parent (e.g. table1-text and fig3) train it once."""
        path = self.out / "models" / name
        if shared is not None:
            digest = hashlib.sha256(json.dumps(json_safe(shared), sort_keys=True).encode()).hexdigest()[:12]
            path = self.out.parent / "shared-models" / f"{name}-{digest}"
        if (path / "trainlock.json").is_file():
            return load(path)
        model, meta = build()
        save(model, path, meta)
        return model, meta

    def _write(self, summary: dict | None = None) -> None:
        data = {
            "name": self.name,
            "quick": self.quick,
            "device": self.device,
            "params": self.params,
            "trainlock_version": __version__,
            "runs": self.runs,
        }
        if summary is not None:
            data["summary"] = summary
        write_text(self.out / RESULTS, json.dumps(json_safe(data), indent=1))

    def finish(self, summary: dict, table: str, plots: list[str]) -> dict:
        """Write the summary into results.json and the table into table.md; returns the result dict."""
        summary = {**summary, "wall_s_this_invocation": time.perf_counter() - self.t0}
        self._write(summary)
        write_text(self.out / "table.md", table)
        return {"name": self.name, "out": str(self.out), "summary": summary, "plots": plots, "runs": len(self.runs)}


# ---------------------------------------------------------------- pieces of a reproduction


def finetune_row(res, **extra) -> dict:
    """An AttackResult as a stored row (per-step losses thinned to at most 200 points)."""
    d = res.to_dict()
    losses = d.pop("losses", []) or []
    stride = max(1, len(losses) // 200)
    d["losses"] = losses[::stride]
    return {**d, **extra}


def mnist_base_and_lock(
    study: Study, arch: str, kwargs: dict, mnist: Task, epochs: int, progress: bool = False
) -> tuple:
    """The paper's image setting (Appendix B.2), cached in `study`: `arch` trained on `mnist` with Adadelta lr 1,
    step-LR gamma 0.7, then locked with SpecDef at the same loop (alpha 0.5, top-k 1).
    Returns ((base, base_meta), (locked, locked_meta)); each meta holds metrics.accuracy on mnist."""
    from ... import models
    from ...api import lock
    from ...locks import SpecDefConfig, specdef_loop
    from ...train import evaluate, fit

    loop = specdef_loop(epochs=epochs, batch_size=64, device=study.device)

    def build_base():
        torch.manual_seed(0)
        m = models.build(arch, input_shape=mnist.input_shape, num_classes=10, **kwargs)
        fit(m, mnist, loop, progress=progress)
        return m, {"task": "mnist", "metrics": {"accuracy": evaluate(m, mnist)}}

    base = study.model("base", build_base)

    def build_locked():
        res = lock(base[0], SpecDefConfig(loop=loop, alpha=0.5, top_k=1), retain=mnist, progress=progress)
        return res.model, {"task": "mnist", "metrics": {"accuracy": res.report.accuracy_after}, **res.record}

    return base, study.model("locked", build_locked)


def gray28(task: Task) -> Task:
    """A colour image task as 28x28 greyscale (ITU-R 601 luma, then bilinear resize), for a model that
    reads MNIST-shaped input, as the paper fine-tunes its MNIST ResNet on CIFAR-10."""

    def conv(x):
        if x.shape[1] == 3:
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
            x = (x * w).sum(1, keepdim=True)
        return torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)

    if task.x_train.dim() != 4:
        raise ValueError(f"task {task.name!r} is not an image task")
    return dataclasses.replace(
        task, x_train=conv(task.x_train), x_test=conv(task.x_test), description=f"{task.description} (greyscale 28x28)"
    )


def verdict(locked: float, base: float, chance: float, margin: float = 0.10, learns: float = 0.10) -> tuple[str, str]:
    """Does "the lock stops fine-tuning" hold for one cell? reproduced: the locked model ends within
    `margin` of chance while the unlocked base learns (ends at least `learns` above chance); not comparable:
    the base does not learn either."""
    if not math.isfinite(base) or base < chance + learns:
        return "not comparable", f"the unlocked base does not learn it either ({base:.2f}, chance {chance:.2f})"
    if math.isfinite(locked) and locked <= chance + margin:
        return "reproduced", f"locked {locked:.2f} <= chance {chance:.2f} + {margin:g}"
    return "not reproduced", f"locked {locked:.2f} > chance {chance:.2f} + {margin:g} (base {base:.2f})"


def pct(v) -> str:
    if v is None:
        return "-"
    v = float(v)
    return "nan" if not math.isfinite(v) else f"{100 * v:.1f}%"


def save_fig(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with writing_file(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path.name


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
