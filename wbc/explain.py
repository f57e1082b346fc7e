"""What prediction can draw: an image with its label and confidence, and Grad-CAM heatmaps (torch hooks)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from wbc.models.module import WBCClassifier

DISPLAY_SIZE = 256  # overlays are enlarged to at least this size so the text stays legible


class GradCAM:
    """Grad-CAM (Selvaraju et al. 2017) on the last convolution of the network, for the predicted class."""

    def __init__(self, model: WBCClassifier):
        self.model = model
        convs = [m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d)]
        if not convs:
            raise ValueError("Grad-CAM needs a network with a convolution layer")
        self.layer = convs[-1]

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) uint8 -> (N, S, S) heatmaps in 0..1 for each image's predicted class."""
        saved: dict[str, torch.Tensor] = {}

        def keep(_module, _inputs, output):
            saved["act"] = output
            output.register_hook(lambda grad: saved.__setitem__("grad", grad))

        handle = self.layer.register_forward_hook(keep)
        try:
            device = next(self.model.parameters()).device
            x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device)
            with torch.enable_grad():
                self.model.zero_grad(set_to_none=True)
                logits = self.model(x)
                logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
        finally:
            handle.remove()
        weights = saved["grad"].mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * saved["act"]).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=images.shape[1:3], mode="bilinear", align_corners=False)[:, 0]
        peak = cam.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
        return (cam / peak).detach().cpu().numpy()


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
