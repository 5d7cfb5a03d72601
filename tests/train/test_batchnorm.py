"""BatchNorm statistics recomputed from clean inputs (`recalibrate_batchnorm`): the SWA-style cumulative pass."""

import pytest
import torch
import torch.nn as nn

from trainlock.train import batchnorms, recalibrate_batchnorm


def bn_net(momentum: float = 0.01) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.BatchNorm1d(5, momentum=momentum), nn.Linear(5, 3), nn.BatchNorm1d(3), nn.Linear(3, 2))


def test_the_statistics_are_the_average_over_the_batches():
    """The first BatchNorm reads the inputs themselves: its running mean is the mean of the batch means and its
    variance the mean of the unbiased batch variances (equal batches), whatever it held before; parameters,
    momenta and the eval mode are as they were."""
    net = bn_net().eval()
    bn = net[0]
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(0.01)
    x = torch.randn(40, 5) * 3 + 2
    params = {k: v.clone() for k, v in net.named_parameters()}
    assert recalibrate_batchnorm(net, x, batch_size=10) == 2
    chunks = x.split(10)
    torch.testing.assert_close(bn.running_mean, torch.stack([c.mean(0) for c in chunks]).mean(0))
    torch.testing.assert_close(bn.running_var, torch.stack([c.var(0) for c in chunks]).mean(0))
    assert not net.training and bn.momentum == 0.01 and net[2].momentum == 0.1
    assert all(torch.equal(v, params[k]) for k, v in net.named_parameters())


def test_a_one_row_tail_is_skipped_and_no_batchnorm_is_a_no_op():
    net = bn_net()
    x = torch.randn(21, 5)
    recalibrate_batchnorm(net, x, batch_size=10)  # 10 + 10 + a tail of 1: no error
    torch.testing.assert_close(net[0].running_mean, x[:20].split(10)[0].mean(0) / 2 + x[10:20].mean(0) / 2)
    plain = nn.Sequential(nn.Linear(5, 2))
    assert batchnorms(plain) == [] and recalibrate_batchnorm(plain, torch.empty(0)) == 0
    with pytest.raises(ValueError, match="at least 2"):
        recalibrate_batchnorm(net, x[:1])
    with pytest.raises(ValueError, match="batch_size"):
        recalibrate_batchnorm(net, x, batch_size=1)
