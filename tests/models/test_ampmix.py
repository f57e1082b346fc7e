"""Fourier amplitude mixing: each training image keeps its phase (shapes) and takes a mix of its own and another
image's amplitude spectrum (brightness, contrast, blur); in training only."""

import pytest
import torch

from tests.helpers import assert_acts_in_training_only
from wbc.models.ampmix import amplitude_mix
from wbc.models.module import WBCClassifier

CLASSES = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
NET = {"name": "cnn", "channels": [8, 16], "hidden": 16}


def test_flat_images_mix_their_brightness_only():
    """Two flat images (only a zero frequency): each comes back flat, at a level between the two, by hand."""
    torch.manual_seed(0)
    x = torch.stack([torch.full((3, 8, 8), 0.2), torch.full((3, 8, 8), 0.6)]).double()
    y = amplitude_mix(x, p=1.0, eta=1.0)
    for i in range(2):
        level = y[i, 0, 0, 0]
        torch.testing.assert_close(y[i], torch.full_like(y[i], level.item()))
        assert 0.2 - 1e-9 <= level <= 0.6 + 1e-9
    # the partner of each is the other: lam = (level - own) / (other - own) lies in [0, 1]
    lam0, lam1 = (y[0, 0, 0, 0] - 0.2) / 0.4, (0.6 - y[1, 0, 0, 0]) / 0.4
    assert 0 <= lam0 <= 1 and 0 <= lam1 <= 1


def test_a_shape_survives_a_flat_partner():
    """A bright square on a dark ground mixed with a flat image (weight < 1): the square stays where it was."""
    torch.manual_seed(1)
    square = torch.full((3, 16, 16), 0.3)
    square[:, 4:12, 4:12] = 0.7
    x = torch.stack([square, torch.full((3, 16, 16), 0.5)])
    y = amplitude_mix(x, p=1.0, eta=0.9)
    inside, outside = y[0, :, 4:12, 4:12].mean(), y[0].sum() - y[0, :, 4:12, 4:12].sum()
    assert inside > outside / (3 * 16 * 16 - 3 * 64) + 0.02


def test_each_image_keeps_its_phase_and_takes_a_partners_amplitude():
    torch.manual_seed(2)
    x = (0.5 + 0.08 * torch.randn(6, 3, 12, 12, dtype=torch.float64)).clamp(0, 1)
    y = amplitude_mix(x, p=1.0, eta=1.0)
    assert 0 < y.min() and y.max() < 1  # nothing clipped: the spectra below are exact
    fx, fy = torch.fft.fft2(x), torch.fft.fft2(y)
    ax, ay = fx.abs(), fy.abs()
    partners = set()
    for i in range(len(x)):
        keep = ay[i] > 1e-6  # the phase of every frequency with an amplitude is the image's own
        torch.testing.assert_close(fy[i][keep] / ay[i][keep], fx[i][keep] / ax[i][keep])
        fits = []  # ay_i = ax_i + lam (ax_j - ax_i) for one other image j and one lam in [0, 1]
        for j in range(len(x)):
            if j == i:
                continue
            d = (ax[j] - ax[i]).flatten()
            lam = torch.dot(d, (ay[i] - ax[i]).flatten()) / torch.dot(d, d)
            fits.append(((ay[i] - ax[i] - lam * (ax[j] - ax[i])).abs().max().item(), j, lam.item()))
        residual, j, lam = min(fits)
        assert residual < 1e-9 and -1e-9 <= lam <= 1 + 1e-9
        partners.add(j)
    assert len(partners) > 1  # random partners, not one image for all


def test_one_image_or_none_drawn_is_left_as_it_is():
    x = torch.rand(1, 3, 8, 8)
    assert amplitude_mix(x, p=1.0) is x
    y = torch.rand(4, 3, 8, 8)
    torch.testing.assert_close(amplitude_mix(y, p=0.0), y)


def test_active_in_training_only():
    assert_acts_in_training_only(ampmix={"p": 1.0})


@pytest.mark.parametrize("p, changed", [(0.0, False), (1.0, True)])
def test_probability(p, changed):
    torch.manual_seed(0)
    model = WBCClassifier(NET, CLASSES, ampmix={"p": p}).train()
    seen = []
    model.net.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    model(x)
    assert (not torch.allclose(seen[0], (x.float() / 255 - model.mean) / model.std, atol=1e-5)) == changed
