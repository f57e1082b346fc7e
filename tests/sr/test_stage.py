"""SuperResolver: plain methods, in-domain training with a locked weight store, OpenCV, checkpoint round trip."""

import multiprocessing as mp

import cv2
import numpy as np
import pytest

import wbc.sr.stage as stage
from tests.helpers import smooth_batch
from wbc.data.pipeline import Preprocessor
from wbc.sr.stage import SuperResolver

TINY_EDSR = {"n_resblocks": 1, "n_feats": 8}
TINY_TRAIN = {"steps": 5, "batch_size": 4, "patch_size": 16}


def smooth_images(n=8, size=32, seed=0):
    return smooth_batch(n, size, seed)


def test_plain_methods_are_cv2_resizes():
    lr = smooth_images(2, 8)
    for method, interp in (("none", cv2.INTER_LINEAR), ("bicubic", cv2.INTER_CUBIC)):
        out = SuperResolver(method, 4)(lr)
        assert out.shape == (2, 32, 32, 3)
        assert np.array_equal(out[1], cv2.resize(lr[1], (32, 32), interpolation=interp))


def test_unknown_method_backend_and_scale_mismatch():
    with pytest.raises(ValueError, match="unknown sr method"):
        SuperResolver("srgan", 2)
    with pytest.raises(ValueError, match="torch or opencv"):
        SuperResolver("espcn", 2, backend="tf")
    with pytest.raises(ValueError, match="does not match data.lr_scale"):
        Preprocessor(32, 4, SuperResolver("bicubic", 2))
    with pytest.raises(ValueError, match="divisible"):
        Preprocessor(30, 4, SuperResolver("bicubic", 4))
    with pytest.raises(RuntimeError, match="no weights"):
        SuperResolver("espcn", 2)(smooth_images(1, 8))


def test_training_is_stored_once_and_reused(tmp_path, monkeypatch):
    calls = []
    real_train = stage.train_sr
    monkeypatch.setattr(stage, "train_sr", lambda *a, **k: calls.append(1) or real_train(*a, **k))
    hr = smooth_images()
    first = SuperResolver("edsr", 2, arch=TINY_EDSR, train=TINY_TRAIN, device="cpu")
    first.prepare(lambda: hr, "dataset-a", tmp_path)
    assert len(calls) == 1 and first.weights_path.exists() and first.ready
    second = SuperResolver("edsr", 2, arch=TINY_EDSR, train=TINY_TRAIN, device="cpu")
    second.prepare(lambda: pytest.fail("must not need training images"), "dataset-a", tmp_path)
    assert len(calls) == 1
    lr = smooth_images(2, 16)
    assert np.array_equal(first(lr), second(lr)) and first.cache_token() == second.cache_token()
    # another dataset/split, another training seed: other weights, other cache token
    other = SuperResolver("edsr", 2, arch=TINY_EDSR, train={**TINY_TRAIN, "seed": 1}, device="cpu")
    other.prepare(lambda: hr, "dataset-a", tmp_path)
    assert len(calls) == 2 and other.cache_token() != first.cache_token()
    assert len(list(tmp_path.glob("edsr-x2-*.pt"))) == 2


def test_weights_file_and_checkpoint_state_round_trip(tmp_path):
    trained = SuperResolver("espcn", 2, train=TINY_TRAIN, device="cpu")
    trained.prepare(lambda: smooth_images(), "d", tmp_path)
    from_file = SuperResolver("espcn", 2, weights=trained.weights_path, device="cpu")
    from_state = SuperResolver.from_state(trained.state(), device="cpu")
    lr = smooth_images(2, 16)
    assert np.array_equal(trained(lr), from_file(lr)) and np.array_equal(trained(lr), from_state(lr))
    with pytest.raises(ValueError, match="do not fit"):
        SuperResolver("espcn", 2, weights=trained.weights_path, arch={"features": [8, 8]}, device="cpu")


def test_patch_size_is_rounded_to_the_scale():
    assert SuperResolver("espcn", 3, train={"patch_size": 48}).train_cfg.patch_size == 48
    assert SuperResolver("espcn", 8, train={"patch_size": 50}).train_cfg.patch_size == 48


def test_opencv_backend_and_state(sr_models_dir):
    resolver = SuperResolver("espcn", 4, backend="opencv", weights=sr_models_dir / "ESPCN_x4.pb")
    lr = smooth_images(2, 16)
    out = resolver(lr)
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.uint8
    again = SuperResolver.from_state(resolver.state())
    assert np.array_equal(again(lr), out)
    with pytest.raises(ValueError, match="needs sr.weights"):
        SuperResolver("espcn", 4, backend="opencv")


def _prepare_in_process(store, marker_dir, index):
    import wbc.sr.stage as st

    real = st.train_sr

    def counting(*a, **k):
        (marker_dir / f"trained-{index}").touch()
        return real(*a, **k)

    st.train_sr = counting
    r = st.SuperResolver("edsr", 2, arch=TINY_EDSR, train={**TINY_TRAIN, "steps": 30}, device="cpu")
    r.prepare(lambda: smooth_images(), "shared", store)


def test_two_processes_train_once(tmp_path):
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_prepare_in_process, args=(tmp_path / "store", tmp_path, i)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(list(tmp_path.glob("trained-*"))) == 1
    assert len(list((tmp_path / "store").glob("*.pt"))) == 1
    assert not list((tmp_path / "store").glob(".*.tmp"))
