"""The reproductions by name, and `reproduce`, which runs one."""

from __future__ import annotations

import importlib
from pathlib import Path

from .common import Study

# name -> (module, one line for --help)
REPRODUCTIONS = {
    "table1-vision": (
        "table1_vision",
        "ResNet-18 locked on MNIST, attacked on CIFAR-10 / Animal-MNIST (KMNIST "
        "stand-in) / Fashion-MNIST at AdamW 0.1, 1e-3, 1e-4",
    ),
    "table1-text": (
        "table1_text",
        "MiniLM (and SmolLM2 with --full) locked on a pair task, attacked on three "
        "others (BIG-bench stand-ins for MRPC/RTE/QQP/QNLI)",
    ),
    "table2": ("table2", "backdoor injection into a MiniLM jailbreak classifier, base vs locked: F1 and ASR"),
    "table3": ("table3", "ResNet-18 on CIFAR-10 unlearns 'automobile', locked, relearned: per-class accuracy"),
    "fig3": ("fig3", "the text lock under AdamW at 1e-3 ... 1e-8, locked vs base"),
    "fig4": ("fig4", "preconditioners (SGD, AdamW, PSGD Kron, XMat, K-FAC, L-BFGS) on an MLP-on-CNN lock"),
}


def reproduce(
    name: str, out: str | Path, quick: bool = True, device: str = "cpu", progress: bool = False, runner=None
) -> dict:
    """Run reproduction `name` into `out`; returns {"name", "out", "summary", "plots", "runs"}. `runner` (a
    RunnerConfig) says where the red-team runs execute; the results do not depend on it."""
    if name not in REPRODUCTIONS:
        raise ValueError(f"unknown reproduction {name!r}; choose from {', '.join(REPRODUCTIONS)}")
    module = importlib.import_module(f"{__package__}.{REPRODUCTIONS[name][0]}")
    study = Study(name, out, quick, device, module.params(quick), runner)
    return module.run(study, progress=progress)
