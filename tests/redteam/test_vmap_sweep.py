import pytest
import torch

import trainlock as tl
from trainlock.red_team.vmap_sweep import batched_sgd_sweep, sequential_sgd_sweep


@pytest.mark.parametrize("name,kw", [("mlp", {"hidden": [16]}), ("cnn", {"channels": [2], "hidden": 8})])
def test_batched_sweep_matches_one_by_one(digits, name, kw):
    torch.manual_seed(0)
    model = tl.models.build(name, input_shape=[1, 8, 8], num_classes=10, **kw)
    lrs = [1e-3, 1e-2, 1e-1]
    acc_v, stacked = batched_sgd_sweep(model, digits, lrs, steps=12, batch_size=32)
    acc_s, params = sequential_sgd_sweep(model, digits, lrs, steps=12, batch_size=32)
    for i in range(len(lrs)):
        for k, v in params[i].items():
            torch.testing.assert_close(stacked[k][i], v, rtol=1e-4, atol=1e-5)
    assert acc_v == pytest.approx(acc_s, abs=1 / len(digits.y_test) + 1e-9)


def test_batchnorm_is_refused(digits):
    model = tl.models.build("resnet18", input_shape=[1, 8, 8], num_classes=10, width=2)
    with pytest.raises(ValueError, match="BatchNorm"):
        batched_sgd_sweep(model, digits, [1e-2], steps=1)
