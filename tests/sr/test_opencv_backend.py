"""OpenCV dnn_superres backend: upscaling, validation, pickling, and the missing-contrib diagnosis."""

import pickle

import cv2
import numpy as np
import pytest

from tests.helpers import smooth_batch
from wbc.sr.opencv_backend import OpenCVSuperResolver, check_dnn_superres


@pytest.fixture(scope="module")
def espcn_x4(sr_models_dir):
    return OpenCVSuperResolver(sr_models_dir / "ESPCN_x4.pb", scale=4)


def test_check_dnn_superres_passes():
    check_dnn_superres()


def test_check_dnn_superres_missing(monkeypatch):
    monkeypatch.delattr(cv2, "dnn_superres")
    with pytest.raises(RuntimeError, match="pip install --force-reinstall") as info:
        check_dnn_superres()
    assert "opencv-contrib-python-headless==" in str(info.value)
    assert "--no-deps" in str(info.value)


def test_check_dnn_superres_missing_factory(monkeypatch):
    monkeypatch.delattr(cv2.dnn_superres, "DnnSuperResImpl_create")
    with pytest.raises(RuntimeError, match="pip install --force-reinstall"):
        check_dnn_superres()


def test_upscale_batch(espcn_x4):
    batch = smooth_batch(2, 16)
    out = espcn_x4(batch)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8


def test_upscale_single_image(espcn_x4):
    image = smooth_batch(1, 16)[0]
    out = espcn_x4(image)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, espcn_x4(image[None])[0])


def test_close_to_bicubic_on_smooth_image(espcn_x4):
    image = smooth_batch(1, 16, seed=1)[0]
    bicubic = cv2.resize(image, (64, 64), interpolation=cv2.INTER_CUBIC)
    diff = np.abs(espcn_x4(image).astype(np.int16) - bicubic.astype(np.int16)).mean()
    assert diff < 10


def test_rgb_order_preserved(espcn_x4):
    # A flat red image must stay red: catches a missing RGB<->BGR conversion.
    image = np.zeros((16, 16, 3), dtype=np.uint8)
    image[..., 0] = 200
    out = espcn_x4(image).astype(np.int16)
    assert out[..., 0].mean() > 150 and out[..., 2].mean() < 50


def test_mismatched_scale_raises(sr_models_dir):
    with pytest.raises(ValueError, match=r"ESPCN_x4\.pb.*x4.*scale=2"):
        OpenCVSuperResolver(sr_models_dir / "ESPCN_x4.pb", scale=2)


def test_missing_file_raises(tmp_path):
    missing = tmp_path / "nope_x2.pb"
    with pytest.raises(FileNotFoundError, match="nope_x2.pb"):
        OpenCVSuperResolver(missing, scale=2)


def test_unknown_name_raises(sr_models_dir):
    with pytest.raises(ValueError, match="srgan"):
        OpenCVSuperResolver(sr_models_dir / "ESPCN_x2.pb", scale=2, name="srgan")


def test_rejects_float_images(espcn_x4):
    with pytest.raises(ValueError, match="uint8"):
        espcn_x4(np.zeros((16, 16, 3), dtype=np.float32))


def test_pickle_round_trip(espcn_x4):
    batch = smooth_batch(2, 16)
    expected = espcn_x4(batch)
    clone = pickle.loads(pickle.dumps(espcn_x4))
    assert clone.scale == 4 and clone.name == "espcn"
    np.testing.assert_array_equal(clone(batch), expected)


@pytest.mark.parametrize("scale", [2, 3])
def test_other_scales(sr_models_dir, scale):
    sr = OpenCVSuperResolver(sr_models_dir / f"ESPCN_x{scale}.pb", scale=scale)
    assert sr(smooth_batch(1, 12)).shape == (1, 12 * scale, 12 * scale, 3)


def test_threads_get_the_same_output_as_one_thread(espcn_x4):
    """Prediction preprocesses in threads: one shared cv2 Net upsampling from several threads corrupted every
    image (all 16 differed); each thread now has its own."""
    from concurrent.futures import ThreadPoolExecutor

    images = [smooth_batch(1, 40, seed=i)[0] for i in range(12)]
    alone = [espcn_x4(im) for im in images]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(espcn_x4, images))
    assert all(np.array_equal(a, b) for a, b in zip(alone, together, strict=True))
