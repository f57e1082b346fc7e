"""Colour steps: white balance on the slide, and Reinhard stain normalisation (statistics measured around the
cell, matched to the training split's)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wbc.data.stain import WHITE, ReinhardNormaliser, WhiteBalance, build_stain, lab_stats


def field(seed: int, tint=(0, 0, 0), cell=(90, 40, 140), size=64) -> np.ndarray:
    """A smear-like image: textured pink surround, a round cell of colour ``cell`` in the middle."""
    rng = np.random.default_rng(seed)
    im = np.clip(rng.normal((225, 185, 185), 12, (size, size, 3)) + np.array(tint), 0, 255).astype(np.uint8)
    cv2.circle(im, (size // 2, size // 2), size // 5, cell, -1)
    return im


def test_surround_statistics_match_the_target_after_normalisation():
    train = np.stack([field(i) for i in range(8)])
    norm = ReinhardNormaliser().fit(train)
    shifted = np.stack([field(100 + i, tint=(-40, 10, 35)) for i in range(4)])  # another lab's stain and light
    before = np.abs(lab_stats(shifted)[:, :3] - norm.target[:3]).max()
    after = np.abs(lab_stats(norm(shifted))[:, :3] - norm.target[:3]).max()
    assert before > 10
    assert after < 2.0  # rounding to uint8 and clipping leave a little


def test_the_cell_does_not_change_the_statistics():
    """Two fields that differ only in the white cell get the same transform: the cell keeps its own colour."""
    a, b = field(1, cell=(90, 40, 140)), field(1, cell=(230, 120, 60))  # a purple and an orange cell
    np.testing.assert_allclose(lab_stats(a[None]), lab_stats(b[None]))
    norm = ReinhardNormaliser().fit(np.stack([field(i, tint=(20, -10, -20)) for i in range(4)]))
    out = norm(np.stack([a, b]))
    surround = np.ones((64, 64), bool)
    cv2.circle(surround.view(np.uint8), (32, 32), 20, 0, -1)
    np.testing.assert_array_equal(out[0][surround], out[1][surround])
    assert not np.array_equal(out[0][32, 32], out[1][32, 32])


def test_identity_when_the_image_is_the_target():
    im = field(3)
    norm = ReinhardNormaliser(lab_stats(im[None])[0])
    assert np.abs(norm(im[None])[0].astype(int) - im).max() <= 2


def test_padding_stays_black():
    im = field(4)
    im[:, :10] = 0
    out = ReinhardNormaliser().fit(np.stack([field(i) for i in range(3)]))(im[None])[0]
    assert (out[:, :10] == 0).all()


def test_state_round_trip_and_options():
    norm = ReinhardNormaliser().fit(np.stack([field(i) for i in range(3)]))
    again = build_stain("reinhard", norm.state()["target"])
    im = field(9, tint=(10, 0, -10))[None]
    np.testing.assert_array_equal(norm(im), again(im))
    assert build_stain(None) is None
    with pytest.raises(ValueError, match="data.stain"):
        build_stain("macenko")
    with pytest.raises(RuntimeError):
        ReinhardNormaliser()(im)


def test_white_balance_removes_the_lamp_colour_and_keeps_the_stain():
    """The same smear under a warm and a cool lamp (a per-channel transmission factor, as a camera records
    it) comes out the same: the slide white, the cell's colour the same transmittance of the stain."""
    smear = field(5).astype(np.float64)
    warm = np.clip(smear * np.array([1.0, 0.88, 0.72]), 0, 255).astype(np.uint8)
    cool = np.clip(smear * np.array([0.80, 0.86, 1.0]), 0, 255).astype(np.uint8)
    out = WhiteBalance()(np.stack([warm, cool])).astype(int)
    slide = out[:, :8, :8].reshape(2, -1, 3).mean(axis=1)
    assert np.abs(np.stack([warm, cool])[:, :8, :8].reshape(2, -1, 3).mean(1) - WHITE).max() > 30  # before
    assert np.abs(slide - WHITE).max() < 25  # the brightest tenth is white; the field's mean is a little below
    assert np.abs(out[0] - out[1]).mean() < 3  # rounding and clipping leave a little
    assert np.abs(out[0, 32, 32] - out[1, 32, 32]).max() <= 6


def test_white_balance_leaves_images_without_slide_and_keeps_padding():
    cell_only = np.full((1, 32, 32, 3), (120, 60, 140), np.uint8)  # a cell filling the image: no slide to measure
    np.testing.assert_array_equal(WhiteBalance()(cell_only), cell_only)
    im = field(6, tint=(-30, 0, 20))
    im[:, :10] = 0
    out = WhiteBalance()(im[None])[0]
    assert (out[:, :10] == 0).all() and (out[:, 10:].max(axis=2) > 0).all()
    assert isinstance(build_stain("white"), WhiteBalance)
    assert WhiteBalance().fit(im[None]).target is not None  # nothing to fit: the datamodule never fits it
