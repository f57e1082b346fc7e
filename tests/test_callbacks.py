"""wbc.callbacks.EMA against a moving average computed by hand on a one-weight model."""

import lightning as L
import pytest
import torch

from wbc.callbacks import EMA


class OneWeight(L.LightningModule):
    """y = w x with a fixed gradient schedule: the weights after each step are recorded, and validation records
    the weight it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.trained: list[float] = []
        self.validated: list[float] = []

    def training_step(self, batch, batch_idx):
        return (self.w * batch[0]).sum()  # gradient = the batch's value: w moves by -lr * x each step

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        self.trained.append(self.w.item())

    def validation_step(self, batch, batch_idx) -> None:
        self.validated.append(self.w.item())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1.0)


def loader(n: int) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader([torch.tensor([float(k + 1)]) for k in range(n)], batch_size=1)


def test_ema_averages_from_its_start_fraction_and_validates_the_raw_weights_before(tmp_path):
    model, ema = OneWeight(), EMA(decay=0.5, start=0.5)
    trainer = L.Trainer(max_epochs=2, callbacks=[ema], default_root_dir=tmp_path, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
    trainer.fit(model, loader(4), loader(1))
    raw = model.trained  # w after each of the 8 steps: -1, -3, -6, -10, -11, -13, -16, -20
    assert raw == [-1.0, -3.0, -6.0, -10.0, -11.0, -13.0, -16.0, -20.0]
    average = raw[4]  # averaging starts at step index 4 (0.5 x 8): the first update copies the weights
    for w in raw[5:]:
        average = 0.5 * average + 0.5 * w
    assert model.w.item() == pytest.approx(average)  # training ends on the average: -17.125
    assert model.validated[-2] == -10.0  # epoch 1's validation, before the average began: the raw weights
    assert model.validated[-1] == pytest.approx(average)  # epoch 2's: the average


def test_ema_refuses_a_decay_or_start_outside_its_range():
    for kwargs in ({"decay": 1.0}, {"decay": 0.0}, {"start": 1.0}, {"start": -0.1}):
        with pytest.raises(ValueError, match="EMA: decay must be in"):
            EMA(**kwargs)
