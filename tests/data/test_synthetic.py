"""The procedural synthetic dataset: shapes, determinism, the source API, and that class evidence is fine detail."""

import cv2
import numpy as np
import pytest

from wbc.data.synthetic import CLASS_NAMES, SyntheticSource, render_cell

EOS_BASO, LYMPHOCYTE = CLASS_NAMES.index("Eosinophil/Basophil"), CLASS_NAMES.index("Lymphocyte")


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("label", range(len(CLASS_NAMES)))
def test_render_shape_and_dtype(label: int, size: int) -> None:
    img = render_cell(label, np.random.default_rng([0, label]), size)
    assert img.shape == (size, size, 3)
    assert img.dtype == np.uint8
    assert img.std() > 10  # a cell on a background, not a blank image


def test_smaller_size_is_the_reduced_native_image() -> None:
    big = render_cell(0, np.random.default_rng(3), 128)
    small = render_cell(0, np.random.default_rng(3), 64)
    np.testing.assert_array_equal(small, cv2.resize(big, (64, 64), interpolation=cv2.INTER_AREA))


def test_one_seed_draws_the_same_cell_at_a_larger_size() -> None:
    big = render_cell(1, np.random.default_rng(3), 256)
    native = render_cell(1, np.random.default_rng(3), 128)
    reduced = cv2.resize(big, (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.astype(np.int16) - native).mean() < 4  # only the pixel noise differs


def test_render_is_deterministic() -> None:
    a = render_cell(2, np.random.default_rng([5, 7]))
    b = render_cell(2, np.random.default_rng([5, 7]))
    c = render_cell(2, np.random.default_rng([6, 7]))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_invalid_label_is_rejected() -> None:
    with pytest.raises(ValueError):
        render_cell(len(CLASS_NAMES), np.random.default_rng(0))


def test_load_does_not_depend_on_order_or_instance() -> None:
    samples = SyntheticSource(n_per_class=3, seed=11, native_size=64).scan()
    forward = [SyntheticSource(n_per_class=3, seed=11, native_size=64).load(s) for s in samples]
    source = SyntheticSource(n_per_class=3, seed=11, native_size=64)
    backward = [source.load(s) for s in reversed(samples)][::-1]
    for a, b in zip(forward, backward, strict=True):
        np.testing.assert_array_equal(a, b)
    other_seed = SyntheticSource(n_per_class=3, seed=12, native_size=64)
    assert not np.array_equal(forward[0], other_seed.load(other_seed.scan()[0]))


def test_load_rejects_a_sample_of_another_seed() -> None:
    sample = SyntheticSource(n_per_class=1, seed=1).scan()[0]
    with pytest.raises(ValueError):
        SyntheticSource(n_per_class=1, seed=2).load(sample)


def test_scan_is_balanced_interleaved_and_unique() -> None:
    source = SyntheticSource(n_per_class=5, seed=4, native_size=64)
    samples = source.scan()
    assert source.class_names == list(CLASS_NAMES)
    assert len(samples) == 20
    assert [s.label for s in samples[:8]] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert np.bincount([s.label for s in samples]).tolist() == [5, 5, 5, 5]
    assert len({s.key for s in samples}) == len({s.path for s in samples}) == 20
    assert samples[6].path == "synthetic://4/6"
    assert samples[6].key == "synthetic:4:64:6"
    assert all(s.split is None for s in samples)


def test_cache_token_changes_with_what_changes_the_images() -> None:
    base = SyntheticSource(n_per_class=10, seed=0, native_size=128).cache_token()
    assert base == SyntheticSource(n_per_class=10, seed=0, native_size=128).cache_token()
    assert base != SyntheticSource(n_per_class=10, seed=1, native_size=128).cache_token()
    assert base != SyntheticSource(n_per_class=10, seed=0, native_size=64).cache_token()
    assert base != SyntheticSource(n_per_class=11, seed=0, native_size=128).cache_token()


def _granule_texture(img: np.ndarray) -> float:
    """Fine colour texture at the cell: band-pass energy of red minus green, which orange-red or dark granules
    a few pixels wide light up and a smooth nucleus or cytoplasm does not."""
    rg = img[..., 0].astype(np.float32) - img[..., 1].astype(np.float32)
    band = cv2.GaussianBlur(rg, (0, 0), 1.0) - cv2.GaussianBlur(rg, (0, 0), 2.5)
    return float(np.mean(band[40:88, 40:88] ** 2))


def test_granulocytes_carry_more_fine_granule_texture_than_lymphocytes() -> None:
    def mean_texture(label: int) -> float:
        return np.mean([_granule_texture(render_cell(label, np.random.default_rng([99, i]))) for i in range(40)])

    assert mean_texture(EOS_BASO) > 2 * mean_texture(LYMPHOCYTE)
