"""Temperature scaling and the expected calibration error, against cases computed by hand."""

from __future__ import annotations

import pytest
import torch

from wbc.calibration import expected_calibration_error, fit_temperature, rescale_probabilities


def test_ece_by_hand():
    # confidences 0.9 (right), 0.9 (wrong), 0.6 (right), 0.6 (right): two bins
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.2 + 0.2
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    targets = torch.tensor([0, 1, 1, 0])
    assert expected_calibration_error(probs, targets) == pytest.approx(0.4, abs=1e-6)
    assert expected_calibration_error(probs[:0], targets[:0]) is None


def test_temperature_undoes_overconfidence():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 4, generator=g) * 1.5
    targets = torch.multinomial(z.softmax(1), 1, generator=g).squeeze(1)  # labels drawn from softmax(z)
    t = fit_temperature(3 * z, targets)  # a network three times too sure
    assert t == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error((3 * z).softmax(1), targets)
    after = expected_calibration_error((3 * z / t).softmax(1), targets)
    assert after < before / 2


def test_temperature_keeps_predictions_and_rescale_inverts_it():
    z = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    calibrated = (z / 2.5).softmax(1)
    assert torch.equal(calibrated.argmax(1), z.argmax(1))
    torch.testing.assert_close(rescale_probabilities(calibrated, 2.5), z.softmax(1), rtol=1e-4, atol=1e-6)


def test_empty_or_degenerate_input_gives_one():
    assert fit_temperature(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)) == 1.0
