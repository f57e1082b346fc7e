"""Export a classifier with its SR stage in front to ONNX, torch.export (.pt2) or TorchScript, and check it
against PyTorch. torch.export is PyTorch's current graph capture (TorchScript tracing is deprecated); a .pt2 file
loads with ``torch.export.load(path).module()`` without this package."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wbc.predict import Predictor

log = logging.getLogger(__name__)


class ExportedClassifier(nn.Module):
    """(N, 3, S/f, S/f) float RGB in 0..255 (the low-resolution image) -> (N, C) class probabilities.

    The deterministic pipeline after the reduction to S/f: the SR stage (or the plain resize of sr=none), the
    rounding to 8 bits that the cached pipeline applies, normalisation, the network and a softmax. Decoding,
    the centre crop and the resizes to S and S/f stay outside the graph (they depend on the input file).
    The plain resizes use torch's interpolation here and OpenCV's in the Python pipeline: outputs differ by
    at most one grey level on a few pixels.
    """

    def __init__(self, predictor: Predictor):
        super().__init__()
        pre = predictor.preprocessor
        restorer = pre.restorer
        if pre.lr_scale > 1 and restorer.opencv is not None:
            raise ValueError("the OpenCV SR backend cannot be exported; train the SR stage with sr.backend=torch")
        model = predictor.model.eval()
        # the plain network and its normalisation, not the LightningModule (which tracing cannot inspect)
        self.net = model.net
        self.register_buffer("mean", model.mean.clone())
        self.register_buffer("std", model.std.clone())
        self.register_buffer("temperature", model.temperature.clone())
        self.scale = pre.lr_scale
        self.sr = restorer.model if (pre.lr_scale > 1 and restorer.model is not None) else None
        # a native SR stage (pre.enlarger, no restorer) enlarges crops before S: outside the graph, like framing
        self.mode = {"none": "bilinear", "bicubic": "bicubic"}.get(getattr(restorer, "method", "none"), "bilinear")
        self.input_size = pre.image_size // pre.lr_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / 255.0
        if self.scale > 1:
            if self.sr is not None:
                x = self.sr(x)
            else:
                x = F.interpolate(x, scale_factor=float(self.scale), mode=self.mode, align_corners=False)
            x = torch.round(x.clamp(0.0, 1.0) * 255.0) / 255.0
        return (self.net((x - self.mean) / self.std) / self.temperature).softmax(dim=1)


def export(predictor: Predictor, path: str | Path, fmt: str = "onnx", check_batch: int = 5) -> dict[str, float]:
    """Write the exported model and check it against the PyTorch module on random inputs (two batch sizes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = ExportedClassifier(predictor).cpu().eval()
    steps = predictor.preprocessor.describe()
    if predictor.preprocessor.enlarger is not None:
        log.warning(
            "the native SR stage (%s, enlarging crops smaller than %d px) is not in the exported graph: feed it "
            "references that wbc.data.pipeline.Preprocessor.reference made",
            predictor.preprocessor.enlarger.name,
            predictor.preprocessor.image_size,
        )
    if steps["framing"] != "centre" or steps["stain"]:
        log.warning(
            "the exported model starts after framing (%s) and stain normalisation (%s): feed it crops that "
            "wbc.data.pipeline.Preprocessor.reference (and .normalise) made, reduced to the input size",
            steps["framing"],
            (steps["stain"] or {}).get("method"),
        )
    size = module.input_size
    example = torch.rand(2, 3, size, size) * 255
    rng = np.random.default_rng(0)
    if fmt == "onnx":
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=["probabilities"],
            dynamic_shapes={"x": {0: batch}},
        )
        program.save(str(path))
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(x: np.ndarray) -> np.ndarray:
            return session.run(None, {"image": x})[0]
    elif fmt == "export":
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(module, (example,), dynamic_shapes={"x": {0: batch}}), str(path))
        loaded = torch.export.load(str(path)).module()

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return loaded(torch.from_numpy(x)).numpy()
    elif fmt == "torchscript":
        traced = torch.jit.trace(module, example)
        traced.save(str(path))
        loaded = torch.jit.load(str(path))

        def run(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return loaded(torch.from_numpy(x)).numpy()
    else:
        raise ValueError(f"format must be onnx, export (torch.export, .pt2) or torchscript, got {fmt!r}")

    worst = 0.0
    for n in (1, check_batch):  # two batch sizes: the batch dimension is dynamic
        x = (rng.random((n, 3, size, size)) * 255).astype(np.float32)
        with torch.no_grad():
            expected = module(torch.from_numpy(x)).numpy()
        worst = max(worst, float(np.abs(run(x) - expected).max()))
    log.info(
        "exported %s (%s): input (N, 3, %d, %d) RGB 0..255; max |p - p_torch| = %.2e", path, fmt, size, size, worst
    )
    return {"max_abs_diff": worst, "input_size": size}
