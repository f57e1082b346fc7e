"""What prediction can draw: an image with its label and confidence, and class-activation heatmaps (grad-cam)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from PIL import Image, ImageDraw

from wbc.models.module import WBCClassifier

DISPLAY_SIZE = 256  # overlays are enlarged to at least this size so the text stays legible


CAM_METHODS = ("gradcam", "gradcam++", "eigencam")


def target_layer(net: torch.nn.Module) -> torch.nn.Module:
    """The layer whose output class-activation maps weigh: the network's last feature map, after its batch norm,
    activation and residual add (the last Conv2d alone would sit before them).

    torchvision ResNet: the last block of ``layer4``; EfficientNet: the last ``features`` stage; the project's cnn:
    the activation of its last convolution block; a timm model: its last feature stage (``feature_info``);
    otherwise the last convolution."""
    from torchvision.models import EfficientNet, ResNet

    from wbc.models.networks import SimpleCNN

    if isinstance(net, ResNet):
        return net.layer4[-1]
    if isinstance(net, EfficientNet):
        return net.features[-1]
    if isinstance(net, SimpleCNN):
        return [m for m in net.features if isinstance(m, torch.nn.ReLU)][-1]
    info = getattr(net, "feature_info", None)
    if info is not None:
        return net.get_submodule(info[-1]["module"])
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise ValueError("class-activation maps need a network with a convolution layer")
    return convs[-1]


class GradCAM:
    """Class-activation maps for each image's predicted class through the grad-cam library (pytorch-grad-cam):
    ``gradcam`` (Selvaraju et al. 2017), ``gradcam++`` (Chattopadhay et al. 2018) or ``eigencam`` (Muhammad and
    Yeasin 2020, gradient-free), on :func:`target_layer`."""

    def __init__(self, model: WBCClassifier, method: str = "gradcam"):
        from pytorch_grad_cam import EigenCAM, GradCAMPlusPlus
        from pytorch_grad_cam import GradCAM as LibGradCAM

        if method not in CAM_METHODS:
            raise ValueError(f"gradcam_method must be one of {', '.join(CAM_METHODS)}, got {method!r}")
        self.model = model
        self.layer = target_layer(model.net)
        cls = {"gradcam": LibGradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM}[method]
        self.cam = cls(model=model, target_layers=[self.layer])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, S, S) heatmaps in 0..1 for each image's predicted class."""
        device = next(self.model.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device).float().div(255)
        was_training = self.model.training
        try:
            with torch.enable_grad():
                return np.asarray(self.cam(input_tensor=x, targets=None), dtype=np.float32)
        finally:
            self.model.train(was_training)
            self.model.zero_grad(set_to_none=True)


def _enlarged(image: np.ndarray) -> Image.Image:
    factor = max(1, int(np.ceil(DISPLAY_SIZE / image.shape[0])))
    return Image.fromarray(image).resize((image.shape[1] * factor, image.shape[0] * factor), Image.NEAREST)


def _caption(img: Image.Image, text: str) -> Image.Image:
    draw = ImageDraw.Draw(img)
    box = draw.textbbox((4, 4), text)
    draw.rectangle((box[0] - 3, box[1] - 3, box[2] + 3, box[3] + 3), fill=(0, 0, 0))
    draw.text((4, 4), text, fill=(255, 255, 255))
    return img


def save_overlay(image: np.ndarray, text: str, path: Path) -> None:
    """The image the classifier saw, enlarged, with ``text`` (label and confidence) in its corner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    _caption(_enlarged(image), text).save(path)


def save_gradcam(image: np.ndarray, heat: np.ndarray, text: str, path: Path, alpha: float = 0.45) -> None:
    """The heatmap (jet colour map) blended over the image, with the predicted class."""
    path.parent.mkdir(parents=True, exist_ok=True)
    colours = (matplotlib.colormaps["jet"](heat)[..., :3] * 255).astype(np.float32)
    blended = (1 - alpha) * image.astype(np.float32) + alpha * colours
    _caption(_enlarged(blended.clip(0, 255).astype(np.uint8)), text).save(path)
