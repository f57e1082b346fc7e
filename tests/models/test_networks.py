"""Every registered network: forward, backward, output shape; the factory's errors."""

import pytest
import torch

from wbc.models.networks import MODELS, SimpleCNN, create_model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_shape(name):
    torch.manual_seed(0)
    net = create_model(name, num_classes=4)
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = net(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_cnn_depth_option():
    shallow, deep = SimpleCNN(4, convs_per_block=1), SimpleCNN(4, convs_per_block=2)
    count = lambda m: sum(isinstance(x, torch.nn.Conv2d) for x in m.modules())  # noqa: E731
    assert (count(shallow), count(deep)) == (4, 8)


def test_unknown_model_and_pretrained_cnn_are_clear():
    with pytest.raises(ValueError, match="unknown model 'vgg'; known"):
        create_model("vgg", 4)
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_model("cnn", 4, pretrained=True)


@pytest.mark.parametrize("name", ["timm/resnet18d", "timm/convnext_atto"])
def test_timm_backbones_train_offline(name):
    pytest.importorskip("timm")
    torch.manual_seed(0)
    net = create_model(name, num_classes=4)  # pretrained=False: nothing downloaded
    x = torch.randn(2, 3, 64, 64)
    out = net(x)
    assert out.shape == (2, 4)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_timm_unknown_architecture_is_one_line():
    pytest.importorskip("timm")
    from wbc.errors import UserError

    with pytest.raises(UserError, match="timm has no architecture 'resnet_nope'; similar: .*resnet"):
        create_model("timm/resnet_nope", 4)


def test_timm_model_in_the_lightning_module(tmp_path):
    pytest.importorskip("timm")
    from hydra.utils import instantiate

    from tests.helpers import compose_config

    cfg = compose_config(["model=timm", "model.net.name=timm/convnext_atto"], tmp_path)
    model = instantiate(cfg.model, class_names=list(cfg.class_names), class_counts=[1, 1, 1, 1], preprocessing={})
    assert type(model.net).__module__.startswith("timm") and model(torch.zeros(2, 3, 32, 32) + 100).shape == (2, 4)
