"""In-domain SR training: aligned patch pairs, loss and PSNR improve, determinism, and batch inference."""

import numpy as np
import pytest
import torch

from tests.helpers import smooth_batch
from wbc.resize import reduce
from wbc.sr.models import build_sr_model
from wbc.sr.quality import psnr
from wbc.sr.registry import method_names
from wbc.sr.training import (
    SRTrainConfig,
    make_lr,
    sample_patch_pairs,
    train_sr,
    upscale_images,
)


@pytest.fixture(scope="module")
def hr_images() -> np.ndarray:
    return smooth_batch(32, 48)


def _tiny(arch: str, scale: int = 2) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sr_model(arch, scale, **({"n_resblocks": 2, "n_feats": 16} if arch == "edsr" else {}))


CFG = SRTrainConfig(steps=80, batch_size=8, patch_size=24, lr=1e-3, log_every=20)


def test_make_lr_matches_reduce(hr_images):
    lr = make_lr(hr_images[:3], 3)
    assert lr.shape == (3, 16, 16, 3) and lr.dtype == np.uint8
    for i in range(3):
        np.testing.assert_array_equal(lr[i], reduce(hr_images[i], 3))


def test_make_lr_not_divisible_raises(hr_images):
    with pytest.raises(ValueError, match="divisible"):
        make_lr(hr_images[:1], 5)


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("scale", [2, 3])
def test_patch_pairs_match_degradation(hr_images, scale, augment):
    lr_images = make_lr(hr_images, scale)
    rng = np.random.default_rng(0)
    lr, hr = sample_patch_pairs(lr_images, hr_images, scale, (8, 8), 16, rng, augment=augment)
    assert lr.shape == (16, 8, 8, 3) and hr.shape == (16, 8 * scale, 8 * scale, 3)
    for lr_patch, hr_patch in zip(lr, hr, strict=True):
        # INTER_AREA at an integer factor is a block mean, so an aligned HR crop reduces to the LR crop.
        np.testing.assert_array_equal(reduce(np.ascontiguousarray(hr_patch), scale), lr_patch)


@pytest.mark.parametrize("arch", method_names(learned=True))
def test_training_lowers_loss_and_beats_untrained(hr_images, arch):
    model = _tiny(arch)
    lr_images = make_lr(hr_images, 2)
    psnr_before = psnr(upscale_images(model, lr_images), hr_images)
    messages: list[str] = []
    stats = train_sr(model, hr_images, 2, CFG, log=messages.append, val_hr=hr_images[:4])
    assert stats["steps"] == CFG.steps
    assert stats["final_loss"] < stats["initial_loss"]
    assert not model.training
    psnr_after = psnr(upscale_images(model, lr_images), hr_images)
    assert psnr_after > psnr_before + 3
    assert np.isfinite(stats["psnr_val"]) and np.isfinite(stats["psnr_val_bicubic"])
    # the validation PSNR is the report's: per image, then the mean (wbc.sr.quality)
    assert stats["psnr_val"] == pytest.approx(psnr(upscale_images(model, make_lr(hr_images[:4], 2)), hr_images[:4]))
    assert stats["seconds"] > 0
    assert len(messages) == CFG.steps // CFG.log_every and messages[-1].startswith("sr step 80/80")


def test_training_is_deterministic(hr_images):
    weights = []
    for _ in range(2):
        model = _tiny("edsr")
        train_sr(model, hr_images, 2, SRTrainConfig(steps=15, batch_size=4, patch_size=24, seed=3))
        weights.append(model.state_dict())
    for key in weights[0]:
        assert torch.equal(weights[0][key], weights[1][key]), key


def test_different_seed_differs(hr_images):
    out = []
    for seed in (0, 1):
        model = _tiny("edsr")
        train_sr(model, hr_images, 2, SRTrainConfig(steps=5, batch_size=4, patch_size=24, seed=seed))
        out.append(model.head.weight.detach().clone())
    assert not torch.equal(out[0], out[1])


def test_patch_larger_than_image_uses_whole_image():
    hr = smooth_batch(4, 12)
    model = _tiny("espcn", scale=3)
    stats = train_sr(model, hr, 3, SRTrainConfig(steps=3, batch_size=2, patch_size=48))
    assert stats["steps"] == 3


def test_non_multiple_images_are_cropped():
    hr = smooth_batch(4, 25)  # 25 is not a multiple of 2: cropped to 24 for training
    stats = train_sr(_tiny("espcn"), hr, 2, SRTrainConfig(steps=2, batch_size=2, patch_size=12))
    assert stats["steps"] == 2


def test_patch_not_divisible_by_scale_raises(hr_images):
    with pytest.raises(ValueError, match="divisible"):
        train_sr(_tiny("espcn", 3), hr_images, 3, SRTrainConfig(steps=1, patch_size=32))


def test_upscale_images_shapes_and_mode(hr_images):
    model = _tiny("edsr", scale=2).train()
    lr = make_lr(hr_images[:5], 2)
    out = upscale_images(model, lr, batch_size=2)
    assert out.shape == (5, 48, 48, 3) and out.dtype == np.uint8
    assert model.training  # mode restored
    single = upscale_images(model, lr[0])
    assert single.shape == (48, 48, 3)
    np.testing.assert_array_equal(single, out[0])
    assert upscale_images(model, lr[:0]).shape == (0, 48, 48, 3)


def test_cosine_schedule_follows_its_formula(hr_images):
    """schedule=cosine: the learning rate at step k is lr/2 (1 + cos(pi k / steps)), logged at each log point."""
    messages: list[str] = []
    cfg = SRTrainConfig(steps=40, batch_size=4, patch_size=24, lr=1e-3, log_every=10, schedule="cosine")
    train_sr(_tiny("espcn"), hr_images, 2, cfg, log=messages.append)
    logged = [float(m.rsplit("lr ", 1)[1]) for m in messages]
    expected = [0.5e-3 * (1 + np.cos(np.pi * (k - 1) / 40)) for k in (10, 20, 30, 40)]  # set at the step's start
    assert logged == pytest.approx(expected, rel=1e-2)
    with pytest.raises(ValueError, match="schedule must be step or cosine"):
        train_sr(_tiny("espcn"), hr_images, 2, SRTrainConfig(steps=1, schedule="linear"))


def test_ema_weights_are_the_running_average(hr_images):
    """ema=d: the model ends with the exponential moving average of its weights over the steps (checked by
    recomputing the average from the weights after each step of an identical run)."""
    cfg = SRTrainConfig(steps=6, batch_size=4, patch_size=24, seed=1)
    snapshots = []
    for steps in range(1, cfg.steps + 1):  # the plain run's weights after 1, 2, ... steps (deterministic)
        model = _tiny("espcn")
        train_sr(model, hr_images, 2, SRTrainConfig(**{**cfg.__dict__, "steps": steps, "lr_decay_at": 1.0}))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
    decay = 0.5
    averaged = _tiny("espcn")
    train_sr(averaged, hr_images, 2, SRTrainConfig(**{**cfg.__dict__, "lr_decay_at": 1.0, "ema": decay}))
    for key, value in averaged.state_dict().items():
        expected = snapshots[0][key]  # AveragedModel starts from the first update's weights
        for snap in snapshots[1:]:
            expected = decay * expected + (1 - decay) * snap[key]
        torch.testing.assert_close(value, expected)


def test_task_loss_pulls_the_classifier_outputs_together(hr_images):
    """loss=l1+task: the frozen classifier's KL term (its probabilities on SR against those on the reference)
    falls during training, the classifier is left untouched, and the term is refused without a classifier."""
    from wbc.models.module import WBCClassifier

    torch.manual_seed(0)
    classifier = WBCClassifier({"name": "cnn", "channels": [8, 16], "hidden": 16}, ["a", "b", "c", "d"]).eval()
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    cfg = SRTrainConfig(steps=60, batch_size=4, patch_size=24, loss="l1+task", task_weight=1.0, task_batch=4)
    stats = train_sr(_tiny("espcn"), hr_images, 2, cfg, task=classifier)
    assert stats["final_task_loss"] < stats["initial_task_loss"]
    assert stats["final_loss"] < stats["initial_loss"]  # the L1 alone, still learned
    for k, v in classifier.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="needs a classifier"):
        train_sr(_tiny("espcn"), hr_images, 2, cfg)


def test_task_loss_needs_a_reference_classifier_checkpoint(tmp_path):
    from wbc.errors import UserError
    from wbc.sr.stage import SuperResolver

    stage = SuperResolver("espcn", 2, train={"loss": "l1+task"})
    with pytest.raises(UserError, match="needs sr.train.task_checkpoint"):
        stage.prepare(lambda: np.zeros((2, 8, 8, 3), np.uint8), "k", tmp_path)
    stage = SuperResolver("espcn", 2, train={"loss": "l1+task", "task_checkpoint": str(tmp_path / "none.ckpt")})
    with pytest.raises(UserError, match="checkpoint not found"):
        stage.prepare(lambda: np.zeros((2, 8, 8, 3), np.uint8), "k", tmp_path)


def test_task_loss_with_real_checkpoints(trained, trained_framed, tmp_path):
    """A classifier trained at f=1 drives the task term (its content keys the stored weights); one trained on
    reduced images (f=2) is refused with one line."""
    from wbc.errors import UserError
    from wbc.sr.stage import SuperResolver

    reference = str(trained_framed[0] / "checkpoints/best.ckpt")
    images = smooth_batch(8, 32)
    train = {"loss": "l1+task", "task_checkpoint": reference, "steps": 4, "batch_size": 2, "patch_size": 16}
    stage = SuperResolver("espcn", 2, train=train)
    stage.prepare(lambda: images, "k", tmp_path)
    assert stage.ready and "final_task_loss" in stage.train_stats
    assert stage._task_digest and len(list(tmp_path.glob("espcn-x2-*.pt"))) == 1
    # the same checkpoint by another path (a link): the stored weights are reused, not trained again
    (tmp_path / "link.ckpt").symlink_to(reference)
    again = SuperResolver("espcn", 2, train={**train, "task_checkpoint": str(tmp_path / "link.ckpt")})
    again.prepare(lambda: pytest.fail("trained again"), "k", tmp_path)
    assert again.weights_digest == stage.weights_digest and len(list(tmp_path.glob("espcn-x2-*.pt"))) == 1
    reduced = {**train, "task_checkpoint": str(trained[0] / "checkpoints/best.ckpt")}
    with pytest.raises(UserError, match="trained at data.lr_scale>1"):
        SuperResolver("espcn", 2, train=reduced).prepare(lambda: images, "k", tmp_path)
