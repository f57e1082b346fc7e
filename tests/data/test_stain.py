"""Reinhard stain normalisation: statistics measured around the cell, matched to the training split's."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from wbc.data.stain import ReinhardNormaliser, build_stain, lab_stats


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
