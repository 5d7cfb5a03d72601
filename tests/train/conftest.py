import pytest
import torch

import trainlock as tl


@pytest.fixture(scope="module")
def base(tmp_path_factory, digits):
    """A saved digits MLP (40 Adam steps): the model directory the command-line tests lock, train and attack."""
    torch.manual_seed(0)
    model = tl.models.build("mlp", input_shape=digits.input_shape, num_classes=10, hidden=[32])
    tl.train.fit(model, digits, tl.LoopConfig(optimizer="adam", lr=1e-2, max_steps=40, device="cpu"), progress=False)
    return tl.save(model, tmp_path_factory.mktemp("base") / "base", {"task": "digits"})
