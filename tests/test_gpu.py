"""On a CUDA GPU (`pytest -m gpu`; deselected by default, run by scripts/gpu_check.sh): `python train.py
trainer=gpu` in bf16 with a learned SR stage trains on the GPU, and its checkpoint predicts on the GPU what it
predicts on the CPU."""

import numpy as np
import pytest
import torch

from tests.helpers import train_folder_run

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_gpu_run_predicts_as_on_the_cpu(tmp_path):
    from wbc.data.decode import read_image
    from wbc.predict import Predictor

    run, _ = train_folder_run(tmp_path, ["data.lr_scale=2", "sr=espcn", "sr.train.steps=10", "trainer=gpu",
                                         "trainer.precision=bf16-mixed", "sr.device=cuda"])  # fmt: skip
    ckpt = run / "checkpoints" / "best.ckpt"
    images = [read_image(p) for p in sorted((tmp_path / "data").rglob("*.png"))[:16]]
    on_gpu = Predictor.from_checkpoint(ckpt, device="cuda")
    assert next(on_gpu.model.parameters()).is_cuda and next(on_gpu.preprocessor.restorer.model.parameters()).is_cuda
    gpu = on_gpu.probabilities(on_gpu.preprocessor(images)).float().cpu().numpy()
    on_cpu = Predictor.from_checkpoint(ckpt, device="cpu")
    cpu = on_cpu.probabilities(on_cpu.preprocessor(images)).float().cpu().numpy()
    np.testing.assert_allclose(gpu, cpu, atol=1e-2)  # float32 on both: kernel and SR rounding differences only
