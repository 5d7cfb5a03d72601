import os
import tempfile

import pytest
import torch
from hypothesis import settings

# property tests draw the same examples on every run (fixed seeds, like the rest of the suite)
settings.register_profile("trainlock", derandomize=True, database=None)
settings.load_profile("trainlock")

# tokenized tasks are cached on disk: the tests write theirs to a throwaway directory, never ~/.cache
os.environ.setdefault("TRAINLOCK_TOKEN_CACHE", tempfile.mkdtemp(prefix="trainlock-tokens-"))

import trainlock as tl
from trainlock.train import LoopConfig, fit


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    from trainlock.red_team import runner

    runner._FRESH.clear()  # every test trains its own runs from scratch (a test may reuse them within itself)


@pytest.fixture(scope="session")
def digits():
    """sklearn's 8x8 digits: real data, 1437 train / 360 test, loads in about a second."""
    return tl.tasks.get("digits")


@pytest.fixture(scope="session")
def digits_permuted(digits):
    return tl.tasks.permuted(digits, seed=1)


@pytest.fixture(scope="session")
def tiny_base(digits):
    """A small MLP trained on digits (about 95% test accuracy)."""
    torch.manual_seed(0)
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])
    fit(model, digits, LoopConfig(optimizer="adam", lr=1e-2, epochs=5, batch_size=32, device="cpu"), progress=False)
    return model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved 8-unit MLP trained briefly on digits: a model directory for CLI tests (do not write into it)."""
    torch.manual_seed(0)
    digits = tl.tasks.get("digits")
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[8])
    fit(model, digits, LoopConfig(optimizer="adam", lr=1e-2, max_steps=20, device="cpu"), progress=False)
    return tl.save(model, tmp_path_factory.mktemp("tiny") / "base", {"task": "digits"})
