"""Export: ONNX (onnxruntime) and TorchScript match PyTorch; the exported graph is the evaluation pipeline."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.helpers import REPO_ROOT
from wbc.export import ExportedClassifier
from wbc.predict import Predictor
from wbc.sr.stage import SuperResolver


@pytest.mark.parametrize("fmt", ["onnx", "export", "torchscript"])
def test_export_script_checks_against_pytorch(trained, tmp_path, fmt):
    run_dir, _ = trained
    out = tmp_path / f"model.{fmt}"
    proc = subprocess.run(
        [
            sys.executable,
            "scripts/export.py",
            f"ckpt_path={run_dir / 'checkpoints/best.ckpt'}",
            f"format={fmt}",
            f"output={out}",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.is_file() and '"max_abs_diff"' in proc.stdout


def test_onnx_dynamic_batch_matches_the_python_pipeline(trained, tmp_path):
    """The ONNX graph on low-resolution images equals the Predictor on the same images (SR stage included)."""
    run_dir, _ = trained
    predictor = Predictor.from_checkpoint(run_dir / "checkpoints/best.ckpt", device="cpu")
    from wbc.export import export

    export(predictor, tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    pre = predictor.preprocessor
    refs = np.random.default_rng(1).integers(0, 256, (7, pre.image_size, pre.image_size, 3), dtype=np.uint8)
    lr = pre.degrade(refs)
    expected = predictor.probabilities(pre.restore(refs)).numpy()
    got = session.run(None, {"image": lr.transpose(0, 3, 1, 2).astype(np.float32)})[0]
    assert got.shape == (7, 4)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_opencv_stage_is_refused(trained, sr_models_dir):
    run_dir, _ = trained
    predictor = Predictor.from_checkpoint(run_dir / "checkpoints/best.ckpt", device="cpu")
    predictor.preprocessor.restorer = SuperResolver("espcn", 2, backend="opencv", weights=sr_models_dir / "ESPCN_x2.pb")
    with pytest.raises(ValueError, match="cannot be exported"):
        ExportedClassifier(predictor)


def test_plain_resize_stage_exports(trained):
    run_dir, _ = trained
    predictor = Predictor.from_checkpoint(run_dir / "checkpoints/best.ckpt", device="cpu")
    predictor.preprocessor.restorer = SuperResolver("bicubic", 2)
    module = ExportedClassifier(predictor)
    probs = module(torch.rand(3, 3, 16, 16) * 255)
    assert probs.shape == (3, 4) and torch.allclose(probs.sum(1), torch.ones(3))


def test_torch_export_program_loads_alone_and_matches(trained, tmp_path):
    """A .pt2 program loads with torch.export alone and gives the Predictor's probabilities on a batch of 3."""
    from wbc.export import ExportedClassifier, export

    predictor = Predictor.from_checkpoint(trained[0] / "checkpoints/best.ckpt", "cpu")
    path = tmp_path / "model.pt2"
    assert export(predictor, path, "export")["max_abs_diff"] <= 1e-4
    program = torch.export.load(str(path)).module()
    size = predictor.preprocessor.image_size // predictor.preprocessor.lr_scale
    x = torch.rand(3, 3, size, size) * 255
    with torch.no_grad():
        torch.testing.assert_close(program(x), ExportedClassifier(predictor).eval()(x), atol=1e-5, rtol=1e-4)
