"""Attack stages, one per file, registered by kind and name (see base.py): a red-team run chains
start -> transforms -> data -> train -> fold. Importing this package registers the built-in ones."""

from . import backdoor, clean, distill, finetune, lora, probe, released, reverse, scratch  # noqa: F401  (they register)
from .base import (
    KINDS,
    STAGES,
    AttackState,
    Chain,
    DataStage,
    FoldStage,
    StageNotApplicable,
    StartStage,
    TrainStage,
    build_stage,
    chain,
    example,
    register_stage,
    registered,
    stage_defaults,
    stage_names,
)
from .row import RowError, RunRow
from .transforms import Transforms

__all__ = [
    "KINDS",
    "STAGES",
    "AttackState",
    "Chain",
    "DataStage",
    "FoldStage",
    "RowError",
    "RunRow",
    "StageNotApplicable",
    "StartStage",
    "TrainStage",
    "Transforms",
    "build_stage",
    "chain",
    "example",
    "register_stage",
    "registered",
    "stage_defaults",
    "stage_names",
]
