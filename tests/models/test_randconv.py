"""RandConv: each training image mixed with a random convolution of itself, its own colour level kept; in
training only (never at evaluation, prediction or batch-norm adaptation)."""

import pytest
import torch

from tests.helpers import assert_acts_in_training_only
from wbc.models.module import WBCClassifier
from wbc.models.randconv import random_convolution

CLASSES = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
NET = {"name": "cnn", "channels": [8, 16], "hidden": 16}


def pixels(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, H*W, C+1): each pixel's channels and a 1 (for least-squares affine fits)."""
    flat = x.flatten(2).transpose(1, 2)
    return torch.cat([flat, torch.ones_like(flat[..., :1])], dim=2)


def test_kernel_size_one_is_a_colour_mixing_per_image():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    y = random_convolution(x, kernel_sizes=(1,))
    assert y.shape == x.shape
    for i in range(len(x)):
        # one affine map of the three channels (a colour matrix and an offset) explains every pixel of image i
        a = pixels(x[i : i + 1])[0]
        coef = torch.linalg.lstsq(a, pixels(y[i : i + 1])[0][:, :3]).solution
        torch.testing.assert_close(a @ coef, pixels(y[i : i + 1])[0][:, :3])
        assert not torch.allclose(coef[:3], torch.eye(3, dtype=x.dtype), atol=0.05)  # not the identity
    # the image's per-channel mean (its brightness and colour level) is kept
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)))


def test_larger_kernels_change_texture_not_only_colour():
    torch.manual_seed(0)
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    y = random_convolution(x, kernel_sizes=(5,))
    a, b = pixels(x), pixels(y)[..., :3]
    for i in range(len(x)):  # no per-pixel colour map explains a 5x5 filter's output
        coef = torch.linalg.lstsq(a[i], b[i]).solution
        assert (a[i] @ coef - b[i]).abs().max() > 0.1
    torch.testing.assert_close(y.mean(dim=(2, 3)), x.mean(dim=(2, 3)))


def test_one_kernel_per_image_whatever_the_batch():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 10, 10).repeat(4, 1, 1, 1)  # four copies of two images
    y = random_convolution(x)
    assert not torch.allclose(y[0], y[2])  # the same image, another kernel
    assert torch.isfinite(y).all()


def test_active_in_training_only():
    assert_acts_in_training_only(randconv={"p": 1.0})


@pytest.mark.parametrize("p, changed", [(0.0, False), (1.0, True)])
def test_probability(p, changed):
    torch.manual_seed(0)
    model = WBCClassifier(NET, CLASSES, randconv={"p": p, "kernel_sizes": [3]}).train()
    seen = []
    model.net.register_forward_pre_hook(lambda _module, args: seen.append(args[0]))
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    model(x)
    assert (not torch.allclose(seen[0], (x.float() / 255 - model.mean) / model.std)) == changed
