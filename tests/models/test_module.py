"""WBCClassifier: input scaling on the device, class-weighted loss, schedulers."""

import lightning as L
import pytest
import torch

from wbc.models.module import WBCClassifier, symmetry_views, zoomed

CLASSES = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
NET = {"name": "cnn", "channels": [8, 16], "hidden": 16}


def test_uint8_and_float_inputs_agree():
    model = WBCClassifier(NET, CLASSES).eval()
    x = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    torch.testing.assert_close(model(x), model(x.float() / 255))


def test_class_weighted_loss_uses_inverse_frequency():
    model = WBCClassifier(NET, CLASSES, class_weighted_loss=True, class_counts=[10, 30, 30, 10])
    # N / (C * n_c) = 80 / (4 * [10, 30, 30, 10])
    torch.testing.assert_close(model.class_weight, torch.tensor([2.0, 2 / 3, 2 / 3, 2.0]))
    with pytest.raises(ValueError, match="class_counts"):
        WBCClassifier(NET, CLASSES, class_weighted_loss=True)


def test_unknown_scheduler_is_rejected():
    with pytest.raises(ValueError, match="cosine, plateau or none"):
        WBCClassifier(NET, CLASSES, scheduler="step")


def test_hyperparameters_hold_what_prediction_needs():
    pre = {"image_size": 64, "lr_scale": 4, "sr": {"method": "bicubic"}}
    model = WBCClassifier(NET, CLASSES, preprocessing=pre)
    assert model.hparams.class_names == CLASSES and model.hparams.preprocessing == pre


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_channels_last_gives_the_same_logits(name):
    """model.channels_last (the default) keeps weights and activations NHWC: same logits as the NCHW network
    with the same weights, whatever layout the batch arrives in."""
    torch.manual_seed(0)
    nhwc = WBCClassifier({"name": name}, CLASSES).eval()
    nchw = WBCClassifier({"name": name}, CLASSES, channels_last=False).eval()
    nchw.load_state_dict(nhwc.state_dict())
    conv = next(m for m in nhwc.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        expected = nchw(x)
        torch.testing.assert_close(nhwc(x), expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(
            nhwc(x.contiguous(memory_format=torch.channels_last)), expected, atol=1e-4, rtol=1e-4
        )


def test_symmetry_views_are_the_eight_flips_and_rotations():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    views = symmetry_views(x)
    assert len(views) == 8 and len({tuple(v.flatten().tolist()) for v in views}) == 8  # an asymmetric image
    # the set is closed under the group: rotating or flipping the input permutes the views
    for moved in (x.rot90(1, (2, 3)), x.flip(3)):
        assert {tuple(v.flatten().tolist()) for v in symmetry_views(moved)} == {
            tuple(v.flatten().tolist()) for v in views
        }


def _disc(radius: float, side: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    return ((yy - side / 2) ** 2 + (xx - side / 2) ** 2 <= radius**2).float().view(1, 1, side, side)


def test_zoomed_magnifies_about_the_centre():
    x = _disc(10)
    assert zoomed(x, 1) is x
    for scale in (1.25, 0.8):
        z = zoomed(x, scale)
        assert z.shape == x.shape
        radius = (z.sum() / torch.pi).sqrt()  # the disc's area gives its radius
        assert radius == pytest.approx(10 * scale, rel=0.03)
        mass = torch.stack(torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")) * z[0]
        assert (mass.sum((1, 2)) / z.sum()).tolist() == pytest.approx([31.5, 31.5], abs=0.1)  # still centred
    # shrinking reflects the border, as the training augmentation does: no black frame
    edge = zoomed(torch.ones(1, 1, 64, 64), 0.5)
    assert torch.allclose(edge, torch.ones_like(edge))


def test_tta_logs_the_mean_of_the_eight_views_beside_the_single_view(tmp_path):
    """test_tta=true: the test stage also scores the mean probability over the eight views, as predict.py's
    tta=true does; the single-view test metrics stay what they were."""
    torch.manual_seed(0)
    model = WBCClassifier(NET, CLASSES, scheduler=None, tta=True)
    x = torch.randint(0, 256, (24, 3, 16, 16), dtype=torch.uint8)
    y = torch.arange(24) % 4
    loader = torch.utils.data.DataLoader(list(zip(x, y, torch.arange(24), strict=True)), batch_size=8)
    trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.test(model, loader)
    logged = trainer.callback_metrics
    model.eval()
    with torch.no_grad():
        single = model(x).softmax(1)
        tta = torch.stack([model(v).softmax(1) for v in symmetry_views(x)]).mean(0)
    assert float(logged["test/accuracy"]) == pytest.approx(float((single.argmax(1) == y).float().mean()))
    assert float(logged["test_tta/accuracy"]) == pytest.approx(float((tta.argmax(1) == y).float().mean()))
    torch.testing.assert_close(model.test_outputs["probs_tta"], tta, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(tta, single)  # a random network is not orientation-free: the views differ
