"""WBCClassifier: input scaling on the device, class-weighted loss, schedulers."""

import pytest
import torch

from wbc.models.module import WBCClassifier

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
