"""AdaBN: batch-norm statistics re-estimated on target images, refused below a minimum number of images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from wbc.adapt import AdaptationError, adapt_batchnorm


def network() -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Flatten())


def test_running_statistics_become_the_targets():
    net = network().eval()
    g = torch.Generator().manual_seed(0)
    target = torch.randn(96, 3, 8, 8, generator=g) * torch.tensor([2.0, 0.5, 1.0]).view(1, 3, 1, 1) + 3
    used = adapt_batchnorm(net, target.split(32))
    assert used == 96
    torch.testing.assert_close(net[0].running_mean, target.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    # the average of per-batch unbiased variances of equal batches, close to the whole set's variance
    torch.testing.assert_close(net[0].running_var, target.var(dim=(0, 2, 3)), rtol=0.05, atol=0.05)
    assert not net.training and not net[3].training  # back in eval mode; dropout was never on
    assert net[0].momentum == 0.1  # restored


def test_too_few_images_are_refused_and_leave_the_model_unchanged():
    net = network().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(AdaptationError, match="at least 32"):
        adapt_batchnorm(net, torch.randn(20, 3, 8, 8).split(10))
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_named_layers_only_are_re_estimated():
    net = network().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    target = torch.randn(64, 3, 8, 8) * 2 + 3
    assert adapt_batchnorm(net, target.split(32), layers=["0"]) == 64
    torch.testing.assert_close(net[0].running_mean, target.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    # the deeper batch norm ("2") keeps the training statistics, though its input changed
    torch.testing.assert_close(net[2].running_mean, before["2.running_mean"])
    torch.testing.assert_close(net[2].running_var, before["2.running_var"])


def test_a_prefix_that_names_no_batch_norm_is_refused_with_the_names_there_are():
    net = network().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(AdaptationError, match=r"layer9 name no batch-norm layer.*0, 2"):
        adapt_batchnorm(net, torch.randn(64, 3, 8, 8).split(32), layers=["0", "layer9"])
    with pytest.raises(AdaptationError, match="empty"):
        adapt_batchnorm(net, torch.randn(64, 3, 8, 8).split(32), layers=[])
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])
