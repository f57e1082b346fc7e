"""The one PSNR definition (per image, then the mean over images) and SSIM, against hand computations."""

import math

import numpy as np
import pytest

from wbc.sr.quality import psnr, sr_quality


def test_psnr_limits():
    a = np.zeros((4, 4, 3), dtype=np.uint8)
    assert psnr(a, a) == float("inf")  # one HWC image counts as a batch of one
    b = a.copy()
    b[...] = 255
    assert psnr(a, b) == pytest.approx(0.0)


def test_psnr_is_the_mean_of_per_image_values():
    """Two images, MSE 1 and 100: the mean of their PSNRs (38.13 dB), not the PSNR of the pooled MSE (31.10)."""
    ref = np.full((2, 8, 8, 3), 100, dtype=np.uint8)
    out = ref.copy()
    out[0] += 1  # every value off by 1: MSE 1
    out[1] += 10  # off by 10: MSE 100
    per_image = [10 * math.log10(255**2 / 1), 10 * math.log10(255**2 / 100)]
    assert psnr(out, ref) == pytest.approx(np.mean(per_image), abs=1e-4)
    assert psnr(out, ref, batch_size=1) == pytest.approx(np.mean(per_image), abs=1e-4)  # batching changes nothing
    pooled = 10 * math.log10(255**2 / 50.5)
    assert abs(psnr(out, ref) - pooled) > 7
    quality = sr_quality(out, ref)
    assert quality["psnr"] == pytest.approx(psnr(out, ref)) and 0 < quality["ssim"] <= 1
