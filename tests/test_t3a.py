"""T3A (wbc.t3a): prototypes computed by hand, a shifted class it corrects, features from the last linear layer."""

import numpy as np
import pytest
import torch
from torch import nn

from wbc.models.module import symmetry_views
from wbc.t3a import adjusted_scores, embed, head, prototypes


def unit(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.stack([np.cos(a), np.sin(a)], 1)


def test_prototypes_by_hand():
    weight = np.array([[2.0, 0.0], [0.0, 3.0]])  # normalised to (1, 0) and (0, 1)
    features = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 5.0]])  # unit: (0.6, 0.8), (1, 0), (0, 1)
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])  # images 0 and 1 called class 0; image 0 more surely
    one = prototypes(features, weight, probs, per_class=1)
    # class 0: (1, 0) + (0.6, 0.8) = (1.6, 0.8) -> / sqrt(3.2); class 1: (0, 1) + (0, 1) = (0, 2) -> (0, 1)
    np.testing.assert_allclose(one, [[1.6 / np.sqrt(3.2), 0.8 / np.sqrt(3.2)], [0.0, 1.0]], atol=1e-12)
    every = prototypes(features, weight, probs, per_class=None)
    # class 0: (1, 0) + (0.6, 0.8) + (1, 0) = (2.6, 0.8)
    np.testing.assert_allclose(every[0], np.array([2.6, 0.8]) / np.hypot(2.6, 0.8), atol=1e-12)
    scores = adjusted_scores(features, weight, probs, per_class=1)
    np.testing.assert_allclose(scores[1], one @ [1.0, 0.0], atol=1e-12)  # the cosine to each prototype


def test_a_class_whose_cells_sit_off_its_weight_vector_is_recovered():
    """Class 0's cells at 20-30 degrees, class 1's at 40.5-56.5 degrees, weight vectors at 0 and 90: the boundary at 45
    calls the five under 45 class 0; prototypes moved to the folder's confident cells put it near 39."""
    angles = np.r_[np.linspace(20, 30, 11), np.linspace(40.5, 56.5, 17)]
    labels = np.r_[np.zeros(11, int), np.ones(17, int)]
    features, weight = unit(angles), unit([0, 90])
    logits = 4 * features @ weight.T
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    before = (probs.argmax(1) == labels).mean()
    after = (adjusted_scores(features, weight, probs, per_class=5).argmax(1) == labels).mean()
    assert before == pytest.approx(23 / 28) and after == 1.0


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, x):
        return self.net(x.float() / 255)


def test_embed_returns_the_last_linear_layers_input_and_the_probabilities():
    model = Toy().eval()
    x = torch.randint(0, 256, (6, 3, 4, 4), dtype=torch.uint8)
    features, probs = embed(model, x)
    with torch.no_grad():
        np.testing.assert_allclose(features, model.net[:3](x.float() / 255), atol=1e-6)
        np.testing.assert_allclose(probs, model(x).softmax(1), atol=1e-6)
        features, probs = embed(model, x, tta=True)
        views = symmetry_views(x)
        np.testing.assert_allclose(
            features, torch.stack([model.net[:3](v.float() / 255) for v in views]).mean(0), atol=1e-6
        )
        np.testing.assert_allclose(probs, torch.stack([model(v).softmax(1) for v in views]).mean(0), atol=1e-6)
    assert not model.net[3]._forward_hooks  # the hook is removed
    assert head(model.net) is model.net[3]
    with pytest.raises(ValueError, match="no linear layer"):
        head(nn.Sequential(nn.Conv2d(3, 2, 1)))
