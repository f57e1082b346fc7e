"""AdaBN: batch-norm statistics re-estimated on target images, refused below a minimum number of images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wbc.adapt import AdaptationError, adapt_batchnorm, training_mix_sample


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


def test_training_mix_sample_restores_the_training_class_mix():
    # 3000 images of class 0 and 1000 of class 1 (a folder mix of 3:1), one-hot probabilities; a training mix of
    # 1:1 weights each class-0 image 0.5 / 0.75 and each class-1 image 0.5 / 0.25: 2000 against 2000 in all
    probs = np.zeros((4000, 2))
    probs[:3000, 0] = 1
    probs[3000:, 1] = 1
    idx = training_mix_sample(probs, source=[0.5, 0.5], folder=[0.75, 0.25], seed=0)
    assert len(idx) == 4000
    assert abs((idx >= 3000).mean() - 0.5) < 0.03
    assert (idx == training_mix_sample(probs, [0.5, 0.5], [0.75, 0.25], seed=0)).all()


def test_training_mix_sample_leaves_a_folder_in_the_training_mix_as_it_is():
    probs = np.full((1000, 4), 0.25)  # every image equally likely of each class: every weight alike
    idx = training_mix_sample(probs, source=[0.4, 0.3, 0.2, 0.1], folder=[0.4, 0.3, 0.2, 0.1])
    assert len(np.unique(idx)) > 600  # uniform draws with replacement: about 632 distinct of 1000


def test_training_mix_sample_refuses_probabilities_without_weight():
    with pytest.raises(AdaptationError, match="no image carries weight"):
        training_mix_sample(np.zeros((5, 2)), source=[0.5, 0.5], folder=[0.5, 0.5])
