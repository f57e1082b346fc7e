"""MixStyle: each image's per-channel feature statistics become a convex mix of its own and a partner's, in
training only (never at evaluation, prediction or batch-norm adaptation)."""

import pytest
import torch

from tests.helpers import assert_acts_in_training_only
from wbc.models.mixstyle import mix_styles, perturb_styles
from wbc.models.module import WBCClassifier

CLASSES = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
NET = {"name": "cnn", "channels": [8, 16], "hidden": 16}
MIX = {"layers": ["features.2"], "p": 1.0, "alpha": 0.1}  # after the first block's ReLU


def stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x.mean(dim=(2, 3)), x.std(dim=(2, 3), unbiased=False)


def test_statistics_are_a_convex_mix_of_two_images():
    torch.manual_seed(0)
    x = torch.randn(6, 5, 8, 8) * torch.rand(6, 5, 1, 1) * 3 + torch.randn(6, 5, 1, 1) * 4
    y = mix_styles(x, alpha=0.3)
    mu, sd = stats(x)
    mu_y, sd_y = stats(y)
    for i in range(len(x)):
        # some partner j and one weight w in [0, 1] explain all 5 channels' mean and std at once
        fits = []
        for j in range(len(x)):
            if j == i:
                fits.append(torch.allclose(mu_y[i], mu[i], atol=1e-4) and torch.allclose(sd_y[i], sd[i], atol=1e-3))
                continue
            w = ((mu_y[i] - mu[j]) / (mu[i] - mu[j])).median()
            ok = 0 <= w <= 1 and torch.allclose(mu_y[i], w * mu[i] + (1 - w) * mu[j], atol=1e-3)
            fits.append(bool(ok and torch.allclose(sd_y[i], w * sd[i] + (1 - w) * sd[j], atol=1e-2)))
        assert any(fits), i
    # the normalised content (the pattern within each map) is kept
    z = lambda t: (t - t.mean(dim=(2, 3), keepdim=True)) / t.std(dim=(2, 3), keepdim=True)  # noqa: E731
    torch.testing.assert_close(z(y), z(x), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("mode", ["mix", "dsu"])
def test_active_in_training_only(mode):
    assert_acts_in_training_only(mixstyle={**MIX, "mode": mode})


def test_unknown_layer_names_the_network_layers():
    with pytest.raises(ValueError, match="layer9.*features, head"):
        WBCClassifier(NET, CLASSES, mixstyle={"layers": ["layer9"]})


def test_dsu_draws_statistics_as_wide_as_the_batch_spread():
    torch.manual_seed(0)
    z = lambda t: (t - t.mean(dim=(2, 3), keepdim=True)) / t.std(dim=(2, 3), keepdim=True)  # noqa: E731
    # images whose channels share one style: nothing to draw from, the features stay (almost) as they are
    same = torch.randn(1, 4, 8, 8).repeat(16, 1, 1, 1)
    torch.testing.assert_close(perturb_styles(same), same, atol=2e-2, rtol=0)
    # styles that vary over the batch: new statistics, spread like the batch's, the content kept
    x = torch.randn(256, 4, 8, 8) * (torch.rand(256, 4, 1, 1) + 0.5) + torch.randn(256, 4, 1, 1) * 2
    y = perturb_styles(x)
    mu, _ = stats(x)
    mu_y, _ = stats(y)
    change = mu_y - mu
    assert change.abs().mean() > 0.5  # moved ...
    torch.testing.assert_close(change.std(dim=0), mu.std(dim=0), atol=0.3, rtol=0.15)  # ... by about the spread
    # the content kept (up to sign: a drawn std can be negative, as in DSU)
    torch.testing.assert_close(z(y).abs(), z(x).abs(), atol=1e-3, rtol=1e-3)
    with pytest.raises(ValueError, match="mode must be mix or dsu"):
        WBCClassifier(NET, CLASSES, mixstyle={**MIX, "mode": "swap"})
