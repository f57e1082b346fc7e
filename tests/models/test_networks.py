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


def test_ibn_resnet_normalises_half_the_channels_per_image():
    from wbc.adapt import adapt_batchnorm
    from wbc.models.networks import IBN

    torch.manual_seed(0)
    net = create_model("resnet18", num_classes=4, ibn=True)
    ibns = [name for name, m in net.named_modules() if isinstance(m, IBN)]
    assert ibns == [f"layer{i}.{j}.bn1" for i in (1, 2, 3) for j in (0, 1)]  # layer4 keeps batch norm
    norm = net.layer2[0].bn1
    assert (norm.split, norm.IN.num_features, norm.BN.num_features) == (64, 64, 64)
    norm.eval()
    x = torch.randn(3, 128, 8, 8)
    # another "lab": every image's channels rescaled and shifted (contrast and colour of the features)
    scale, shift = torch.rand(3, 128, 1, 1) + 0.5, torch.randn(3, 128, 1, 1)
    y, y_shifted = norm(x), norm(x * scale + shift)
    torch.testing.assert_close(y[:, :64], y_shifted[:, :64], atol=1e-4, rtol=1e-4)  # the instance half: unchanged
    assert (y[:, 64:] - y_shifted[:, 64:]).abs().mean() > 0.1  # the batch half: moved
    # the whole network trains, predicts one image at a time, and AdaBN adapts its batch-norm halves
    out = net(torch.randn(4, 3, 64, 64))
    out.sum().backward()
    assert norm.IN.weight.grad is not None and norm.BN.weight.grad is not None
    net.eval()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    before = norm.BN.running_mean.clone()
    assert adapt_batchnorm(net, [torch.randn(16, 3, 64, 64) * 3 + 1 for _ in range(2)]) == 32
    assert not torch.allclose(before, norm.BN.running_mean)


def test_ibn_keeps_a_pretrained_norms_parameters():
    from wbc.models.networks import IBN

    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(8)
    for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
        t.data = torch.rand(8) + 0.1
    ibn = IBN(bn)
    torch.testing.assert_close(torch.cat((ibn.IN.weight, ibn.BN.weight)), bn.weight)
    torch.testing.assert_close(torch.cat((ibn.IN.bias, ibn.BN.bias)), bn.bias)
    torch.testing.assert_close(ibn.BN.running_var, bn.running_var[4:])
