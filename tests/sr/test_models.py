"""Shapes, gradients, parameter count and registry of the PyTorch SR models (every registered network)."""

from pathlib import Path

import pytest
import torch

from tests.helpers import compose_config
from wbc.sr.models import EDSR, ESPCN, build_sr_model
from wbc.sr.registry import SR_METHODS, get_method, method_names, register_network

NETWORKS = [get_method(name).network for name in method_names(learned=True)]
SMALL = {EDSR: {"n_resblocks": 2, "n_feats": 16}}  # keyword arguments that keep a test model small
CONF_SR = Path(__file__).resolve().parents[2] / "conf" / "sr"


def small(cls, scale, **kwargs):
    return cls(scale, **SMALL.get(cls, {}), **kwargs)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("cls", NETWORKS)
def test_output_shape(cls, scale):
    model = small(cls, scale)
    out = model(torch.rand(2, 3, 12, 12))
    assert out.shape == (2, 3, 12 * scale, 12 * scale)
    assert out.dtype == torch.float32


def test_default_edsr_shape():
    assert EDSR(2)(torch.rand(1, 3, 12, 12)).shape == (1, 3, 24, 24)


def test_espcn_any_integer_scale():
    assert ESPCN(5)(torch.rand(1, 3, 6, 6)).shape == (1, 3, 30, 30)


@pytest.mark.parametrize("scale", [5, 6, 1])
def test_edsr_unsupported_scale_raises(scale):
    with pytest.raises(ValueError, match="scale"):
        EDSR(scale)


@pytest.mark.parametrize("scale", [1, 0, 2.5])
def test_espcn_bad_scale_raises(scale):
    with pytest.raises(ValueError, match="scale"):
        ESPCN(scale)


@pytest.mark.parametrize("cls", NETWORKS)
def test_backward(cls):
    model = small(cls, 2)
    model(torch.rand(2, 3, 8, 8)).abs().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name


def test_edsr_baseline_x4_parameter_count():
    # Lim et al. 2017 report 1.5M parameters for the baseline (16 blocks, 64 features).
    n = sum(p.numel() for p in EDSR(4).parameters())
    assert 1.3e6 <= n <= 1.7e6


def test_edsr_mean_is_buffer_not_parameter():
    model = EDSR(2, n_resblocks=1, n_feats=8)
    assert "rgb_mean" in model.state_dict()
    assert all("rgb_mean" not in name for name, _ in model.named_parameters())


def test_edsr_single_channel():
    assert EDSR(2, n_resblocks=1, n_feats=8, channels=1)(torch.rand(1, 1, 5, 5)).shape == (1, 1, 10, 10)


def test_build_sr_model():
    assert method_names() == ["none", "bicubic", "espcn", "fsrcnn", "edsr"]
    assert method_names(learned=True) == ["espcn", "fsrcnn", "edsr"]
    model = build_sr_model("edsr", 3, n_resblocks=1, n_feats=8)
    assert isinstance(model, EDSR) and model.scale == 3
    assert isinstance(build_sr_model("ESPCN", 2), ESPCN)


def test_build_sr_model_unknown_or_plain_name():
    with pytest.raises(ValueError, match=r"unknown sr method 'srgan'.*none, bicubic, espcn"):
        build_sr_model("srgan", 2)
    with pytest.raises(ValueError, match="interpolation"):
        build_sr_model("bicubic", 2)


def test_a_name_registers_once():
    with pytest.raises(ValueError, match="registered twice"):
        register_network("espcn")(ESPCN)
    assert SR_METHODS["espcn"].network is ESPCN


@pytest.mark.parametrize("option", sorted(p.stem for p in CONF_SR.glob("*.yaml")))
def test_every_sr_option_is_a_registered_method_that_builds(option, tmp_path):
    from hydra.utils import instantiate

    cfg = compose_config([f"sr={option}", "data.lr_scale=2", "sr.device=cpu"], tmp_path)
    stage = instantiate(cfg.sr)  # builds the network from the option's arch (untrained)
    assert stage.method == cfg.sr.method and get_method(stage.method)
    if get_method(stage.method).learned:
        assert stage.model(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)


@pytest.mark.parametrize("name", method_names())
def test_every_method_has_its_option(name):
    assert (CONF_SR / f"{name}.yaml").is_file()


@pytest.mark.parametrize("cls", NETWORKS)
def test_residual_variant_starts_near_bicubic(cls):
    """With the global bicubic skip and a zeroed last layer, the output is exactly the bicubic upscale."""
    torch.manual_seed(0)
    model = small(cls, 2, residual=True)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    x = torch.rand(1, 3, 8, 8)
    expected = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    torch.testing.assert_close(model(x), expected)
