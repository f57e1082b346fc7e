"""Class priors (wbc.prior): Bayes' reweighting by hand, the EM estimate of a folder's class mix on data whose
true posteriors are known, and the settings' checks."""

import numpy as np
import pytest

from wbc.prior import (
    PriorError,
    adjust,
    apply_prior,
    check_setting,
    estimate_prior,
    reweight,
    split_prior,
    tag,
    training_prior,
)


def test_reweight_by_hand():
    # p = (0.5, 0.5) under a 3:1 mix; under 1:1 the odds are multiplied by (1/3) / 1: (0.25, 0.75)
    out = reweight(np.array([[0.5, 0.5], [0.9, 0.1]]), np.array([0.75, 0.25]), np.array([0.5, 0.5]))
    np.testing.assert_allclose(out[0], [0.25, 0.75])
    np.testing.assert_allclose(out[1], [0.9 / 3 / (0.9 / 3 + 0.1), 0.1 / (0.9 / 3 + 0.1)])
    # a class the training split lacked (share 0): no probability, no division by zero
    np.testing.assert_allclose(
        reweight(np.array([[0.6, 0.4, 0.0]]), np.array([0.5, 0.5, 0]), np.ones(3) / 3), [[0.6, 0.4, 0]]
    )
    # back again: the probabilities as they were
    np.testing.assert_allclose(reweight(out, np.array([0.5, 0.5]), np.array([0.75, 0.25])), [[0.5, 0.5], [0.9, 0.1]])


def gaussian_posteriors(mix: np.ndarray, source: np.ndarray, n: int, seed: int = 0):
    """Labels drawn with ``mix``; one feature x ~ N(2y, 1) per image; the exact posteriors under ``source``."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(mix), n, p=mix)
    x = rng.normal(2.0 * y, 1.0)
    likelihood = np.exp(-0.5 * (x[:, None] - 2.0 * np.arange(len(mix))) ** 2)
    posterior = likelihood * source
    return y, posterior / posterior.sum(1, keepdims=True)


def test_em_recovers_the_folders_class_mix_and_helps_its_accuracy():
    source = np.array([0.4, 0.1, 0.1, 0.4])  # a training split heavy in the first and last classes
    target = np.array([0.1, 0.4, 0.4, 0.1])  # a folder rich in the middle ones
    y, probs = gaussian_posteriors(target, source, 20_000)
    mix, iterations = estimate_prior(probs, source)
    np.testing.assert_allclose(mix, target, atol=0.02)
    assert 1 < iterations < 1000
    adjusted, used = apply_prior(probs, source, "folder")
    np.testing.assert_allclose(used, mix)
    assert (adjusted.argmax(1) == y).mean() > (probs.argmax(1) == y).mean() + 0.05
    # a folder with the training mix: the estimate stays there, and the accuracy with it
    y, probs = gaussian_posteriors(source, source, 20_000, seed=1)
    np.testing.assert_allclose(estimate_prior(probs, source)[0], source, atol=0.02)
    same, _ = apply_prior(probs, source, "folder")
    assert abs((same.argmax(1) == y).mean() - (probs.argmax(1) == y).mean()) < 0.005


def test_apply_prior_settings_and_refusals():
    source = np.array([0.5, 0.25, 0.25])
    probs = np.array([[0.2, 0.3, 0.5], [np.nan, np.nan, np.nan], [0.6, 0.2, 0.2]])
    trained, mix = apply_prior(probs, source, "train")
    np.testing.assert_array_equal(trained[[0, 2]], probs[[0, 2]])
    np.testing.assert_array_equal(mix, source)
    uniform, mix = apply_prior(probs, source, "uniform")
    np.testing.assert_allclose(mix, [1 / 3] * 3)
    np.testing.assert_allclose(uniform[0], np.array([0.2 / 2, 0.3, 0.5]) / (0.1 + 0.3 + 0.5))
    assert np.isnan(uniform[1]).all()  # a file that failed stays a failure
    given, mix = apply_prior(probs, source, [2, 1, 1])  # proportions, normalised: the training mix itself
    np.testing.assert_allclose(mix, source)
    np.testing.assert_allclose(given[[0, 2]], probs[[0, 2]])
    with pytest.raises(PriorError, match="needs at least 64 predicted images; got 2"):
        apply_prior(probs, source, "folder")
    assert apply_prior(probs, source, "folder", min_images=2)[0].shape == probs.shape
    for bad, message in (("maybe", "prior=maybe: use train, uniform, folder"), ([1, 2], "give 3 non-negative"),
                         ([1, -1, 1], "give 3 non-negative")):  # fmt: skip
        with pytest.raises(PriorError, match=message):
            apply_prior(probs, source, bad)
        with pytest.raises(PriorError, match=message):
            check_setting(bad, 3)


def test_training_prior_follows_how_the_classes_were_trained():
    assert split_prior([30, 10, 60], balanced=False) == [0.3, 0.1, 0.6]
    assert split_prior([30, 10, 60], balanced=True) == [1 / 3] * 3
    np.testing.assert_allclose(training_prior({"class_prior": [0.2, 0.8]}, 2), [0.2, 0.8])
    # checkpoints before the prior was recorded: their training split's counts, unless the loss balanced them
    np.testing.assert_allclose(training_prior({"class_counts": [1, 3]}, 2), [0.25, 0.75])
    np.testing.assert_allclose(training_prior({"class_counts": [1, 3], "class_weighted_loss": True}, 2), [0.5, 0.5])
    np.testing.assert_allclose(training_prior({}, 4), [0.25] * 4)
    with pytest.raises(PriorError, match="does not fit its 3 classes"):
        training_prior({"class_prior": [0.5, 0.5]}, 3)


def test_auto_follows_the_recipe_and_keeps_the_training_mix_on_a_small_folder():
    hparams = {"class_prior": [0.75, 0.25], "prior": "folder"}
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1, 1], 100)
    out, info = adjust(probs, hparams, "auto")
    assert info["prior"] == "folder" and info["training_mix"] == [0.75, 0.25]
    np.testing.assert_allclose(out, apply_prior(probs, np.array([0.75, 0.25]), "folder")[0])
    out, info = adjust(probs[:10], hparams, "auto")  # too few to estimate: as trained
    assert info["prior"] == "train"
    np.testing.assert_array_equal(out, probs[:10])
    with pytest.raises(PriorError, match="got 10"):  # asked for by name: refused, not changed
        adjust(probs[:10], hparams, "folder")
    assert adjust(probs, {"class_prior": [0.75, 0.25]}, "auto")[1]["prior"] == "train"  # a recipe without one
    assert adjust(probs, hparams, [1, 1])[1] == {"prior": [1.0, 1.0], "mix": [0.5, 0.5], "training_mix": [0.75, 0.25]}
    assert (tag("folder"), tag(None), tag([0.6, 0.3, 0.1])) == ("folder", "train", "[0.6, 0.3, 0.1]")
