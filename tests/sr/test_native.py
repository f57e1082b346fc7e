"""Native SR: crops smaller than S enlarged by the SR stage (wbc/sr/native.py), in the pipeline, in training and
in prediction, and the enlarger comparison (wbc/sr/native_study.py)."""

import json
import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import REPO_ROOT, TINY, compose_config, smooth_batch
from wbc.data.framing import Framing
from wbc.data.pipeline import Preprocessor
from wbc.resize import resize_to, upscale
from wbc.sr.native import NativeEnlarger, load_enlarger
from wbc.sr.native_study import DEFAULT_ENLARGERS, add_verdicts, write_report
from wbc.sr.stage import SuperResolver


def ready_espcn(scale: int = 2, seed: int = 0) -> SuperResolver:
    """An ESPCN stage with random (untrained) weights loaded, as a checkpoint would give it."""
    torch.manual_seed(seed)
    resolver = SuperResolver("espcn", scale, arch={"features": [8, 8]}, device="cpu")
    resolver._load({"state_dict": resolver.model.state_dict()}, "test")
    return resolver


def test_plain_enlargers_interpolate_straight_to_s():
    crop = smooth_batch(1, 20)[0]
    for name, interpolation in (("none", "bilinear"), ("bilinear", "bilinear"), ("bicubic", "bicubic")):
        out = load_enlarger(name)(crop, 48)
        np.testing.assert_array_equal(out, upscale(crop, 48, interpolation))
    assert not np.array_equal(load_enlarger("none")(crop, 48), load_enlarger("bicubic")(crop, 48))


def test_crops_of_s_or_larger_are_only_reduced():
    big = smooth_batch(1, 80)[0]
    enlarger = NativeEnlarger(ready_espcn())
    np.testing.assert_array_equal(enlarger(big, 48), resize_to(big, 48))
    np.testing.assert_array_equal(enlarger(big[:48, :48], 48), big[:48, :48])


def test_a_learned_enlarger_runs_its_model_at_its_factor_then_resizes_to_s():
    resolver = ready_espcn(scale=2)
    enlarger = NativeEnlarger(resolver)
    crop = smooth_batch(1, 30)[0]
    out = enlarger(crop, 48)  # 30 -> 60 by ESPCN x2, then reduced to 48
    assert out.shape == (48, 48, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, resize_to(resolver(crop[None])[0], 48))
    assert not np.array_equal(out, upscale(crop, 48, "bicubic"))  # random weights: not a plain resize
    # a non-square image: its central square, as resize_to takes it
    wide = smooth_batch(1, 30)[0][:, :]
    wide = np.concatenate([wide, wide[:, :10]], axis=1)  # 30 x 40
    np.testing.assert_array_equal(enlarger(wide, 48), enlarger(wide[:, 5:35], 48))
    assert enlarger.name == "espcn x2" and enlarger.cache_token().startswith("native-espcn-x2-")


def test_load_enlarger_from_weights_files(tmp_path, sr_models_dir):
    resolver = ready_espcn(scale=3)
    path = tmp_path / "espcn-x3.pt"
    torch.save({"state_dict": resolver.model.state_dict(), "method": "espcn", "scale": 3,
                "arch": {"features": [8, 8]}}, path)  # fmt: skip
    loaded = load_enlarger(path, device="cpu")
    assert (loaded.resolver.method, loaded.resolver.scale, loaded.ready) == ("espcn", 3, True)
    crop = smooth_batch(1, 16)[0]
    np.testing.assert_array_equal(loaded(crop, 40), NativeEnlarger(resolver)(crop, 40))
    old = tmp_path / "old.pt"
    torch.save({"state_dict": resolver.model.state_dict()}, old)
    with pytest.raises(ValueError, match=r"old\.pt: SR weights without their method"):
        load_enlarger(old)
    with pytest.raises(ValueError, match="no such weights file"):
        load_enlarger(tmp_path / "missing.pt")
    pb = load_enlarger(sr_models_dir / "ESPCN_x2.pb")
    assert (pb.resolver.method, pb.resolver.scale, pb.resolver.backend) == ("espcn", 2, "opencv")
    assert pb(crop, 40).shape == (40, 40, 3)


def test_native_stage_needs_lr_scale_one_and_a_factor():
    with pytest.raises(ValueError, match="does not combine with data.lr_scale=2"):
        SuperResolver("espcn", 2, native=True)
    with pytest.raises(ValueError, match="native_scale must be an integer >= 2"):
        SuperResolver("espcn", 1, native=True, native_scale=1)
    stage = SuperResolver("espcn", 1, native=True, native_scale=3)
    assert (stage.scale, stage.native) == (3, True)


def test_the_pipeline_enlarges_small_crops_and_a_checkpoint_state_brings_the_enlarger_back():
    resolver = ready_espcn()
    resolver.native = True
    pre = Preprocessor(48, 1, resolver, Framing("centre"), enlarger=NativeEnlarger(resolver))
    small, big = smooth_batch(1, 30)[0], smooth_batch(1, 64, seed=1)[0]
    np.testing.assert_array_equal(pre.reference(small), NativeEnlarger(resolver)(small, 48))
    np.testing.assert_array_equal(pre.reference(big), resize_to(big, 48))
    rebuilt = Preprocessor.from_description(
        {"image_size": 48, "lr_scale": 1, **pre.describe()}, SuperResolver.from_state(resolver.state(), "cpu")
    )
    assert rebuilt.restorer is None and rebuilt.enlarger is not None
    np.testing.assert_array_equal(rebuilt.reference(small), pre.reference(small))
    assert pre.reference_token() == rebuilt.reference_token() != ""
    assert Preprocessor(48).reference_token() == ""


@pytest.mark.slow
def test_training_with_native_sr_enlarges_small_crops_and_prediction_does_the_same(tmp_path):
    """sr.native=true on images smaller than S: the SR stage is trained in-domain at its factor, enlarges every
    crop in training, is stored in the checkpoint, and prediction rebuilds the same input."""
    from wbc.predictor import Predictor
    from wbc.train import run as train

    overrides = [o for o in TINY if not o.startswith("data.image_size")]
    cfg = compose_config([*overrides, "data.image_size=48", "data.source.native_size=32", "sr=espcn",
                          "sr.native=true", "sr.train.steps=5", "logger=none"], tmp_path)  # fmt: skip
    assert cfg.data.lr_scale == 1  # auto gives f=1 to a native stage
    result = train(cfg)
    assert "skipped" not in result
    run = tmp_path / "run"
    stored = list((tmp_path / "cache" / "sr").glob("espcn-x2-*.pt"))
    assert len(stored) == 1
    payload = torch.load(stored[0], weights_only=True)
    assert (payload["method"], payload["scale"]) == ("espcn", 2)
    (enlarged,) = (tmp_path / "cache").rglob("native-*.npy")  # the training references, small crops enlarged
    assert np.load(enlarged, mmap_mode="r").shape[1:] == (48, 48, 3)
    predictor = Predictor.from_checkpoint(run / "checkpoints" / "best.ckpt", "cpu")
    enlarger = predictor.preprocessor.enlarger
    assert enlarger is not None and enlarger.name == "espcn x2" and predictor.preprocessor.restorer is None
    reference = load_enlarger(stored[0], "cpu")
    image = smooth_batch(1, 32, seed=5)[0]
    np.testing.assert_array_equal(predictor.preprocessor.reference(image), reference(image, 48))
    predict_small_images_with_another_enlarger(run / "checkpoints" / "best.ckpt", tmp_path)
    from wbc.export import export  # the classifier exports; the enlarger stays in front of it, as framing does

    assert export(predictor, tmp_path / "model.pt2", fmt="export")["max_abs_diff"] < 1e-4
    manifest = (run / "config.yaml").read_text()
    assert "native: true" in manifest
    assert json.loads((run / "metrics.json").read_text())["test"]["test/accuracy"] >= 0


def predict_small_images_with_another_enlarger(ckpt, tmp_path):
    """predict.py enlarger=bicubic: every file predicted; a bad enlarger is refused with exit 2 and its name."""
    from PIL import Image

    from wbc.predict import run as predict

    folder = tmp_path / "small"
    folder.mkdir()
    for i, image in enumerate(smooth_batch(3, 32, seed=7)):
        Image.fromarray(image).save(folder / f"cell{i}.png")
    cfg = OmegaConf.load(REPO_ROOT / "conf" / "predict.yaml")
    for key in ("defaults", "hydra"):
        del cfg[key]
    cfg.merge_with({"ckpt_path": str(ckpt), "input": str(folder), "output_dir": str(tmp_path / "pred"),
                    "device": "cpu", "decode_threads": 1, "enlarger": "bicubic"})  # fmt: skip
    assert predict(cfg) == 0
    rows = (tmp_path / "pred" / "predictions.csv").read_text().splitlines()
    assert len(rows) == 4 and all("cell" in r for r in rows[1:])
    cfg.enlarger = str(tmp_path / "no-such.pt")
    assert predict(cfg) == 2


def test_native_sr_config_takes_any_set_of_enlargers():
    """The documented command line composes: a dict of enlargers replaces the default (null), in its order."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO_ROOT / "conf")):
        given = ["ckpt_paths=[a.ckpt]", "datasets={lisc: somewhere}"]
        cfg = compose("native_sr", overrides=[*given, "enlargers={resize: none, espcn: w.pt, edsr: e.pt}"])
        default = compose("native_sr", overrides=given)
    assert list(cfg.enlargers) == ["resize", "espcn", "edsr"] and cfg.enlargers.espcn == "w.pt"
    assert default.enlargers is None and list(DEFAULT_ENLARGERS) == ["resize", "bicubic"]


def test_report_verdicts_are_holm_corrected_over_the_report(tmp_path):
    def row(name, diff, p):
        return {"enlarger": name, "accuracy": 0.8 + diff, "f1_macro": 0.8 + diff, "seeds": 1,
                "test": {"diff": diff, "lo": diff - 0.01, "hi": diff + 0.01, "p": p, "mdd": 0.02,
                         "method": "McNemar exact, 1 seed (training noise not measured)"}}  # fmt: skip

    base = {"enlarger": "resize", "accuracy": 0.8, "f1_macro": 0.8, "seeds": 1}
    crops = {"sampled": 10, "smaller_than_S": 10, "median_side": 153.0, "image_size": 224}
    results = [
        {
            "name": "lisc",
            "adapt_bn": False,
            "images": 100,
            "failed": 0,
            "um_per_px": 0.2,
            "crops": crops,
            "rows": [base, row("bicubic", 0.02, 0.02), row("espcn", -0.03, 0.001)],
        },  # fmt: skip
    ]
    add_verdicts(results)
    tests = [r["test"] for r in results[0]["rows"][1:]]
    # Holm over two p-values: 0.001 * 2 = 0.002 (hurt); max(0.02 * 1, 0.002) = 0.02 (helped)
    assert [t["p_holm"] for t in tests] == pytest.approx([0.02, 0.002])
    assert [t["verdict"] for t in tests] == ["helped", "hurt"]
    text = write_report(results, tmp_path, "test")
    assert (
        "| lisc | no | espcn | 100 (100) | 0.7700 | 0.7700 | -3.00 [-4.00, -2.00] pt | 0.001 (0.002) | 2.00 pt | hurt |"
        in text
    )
    assert "10 of 10 sampled crops smaller than S=224 (median side 153 px" in text
    assert (tmp_path / "native_sr.md").read_text() == text
    assert math.isfinite(tests[0]["p_holm"])


@pytest.mark.slow
def test_native_sr_command_compares_enlargers_on_a_labelled_folder(trained_framed, tmp_path):
    from wbc.sr.native_study import run

    run_dir, class_map = trained_framed
    cfg = OmegaConf.create({
        "ckpt_paths": [str(run_dir / "checkpoints/best.ckpt")] * 2,  # two "seeds": the crossed analysis runs
        "datasets": {"mine": str(run_dir.parent / "data")},
        "enlargers": {"resize": "none", "bicubic": "bicubic"},
        "class_map": OmegaConf.create(class_map), "adapt_bn": [False], "um_per_px": None, "batch_size": 16,
        "decode_threads": 1, "device": "cpu", "trust_checkpoint": False, "output_dir": str(tmp_path),
    })  # fmt: skip
    assert run(cfg) == 0
    report = json.loads((tmp_path / "native_sr.json").read_text())
    (result,) = report["results"]
    assert result["images"] == 64 and [r["enlarger"] for r in result["rows"]] == ["resize", "bicubic"]
    test = result["rows"][1]["test"]
    assert test["seeds"] == 2 and test["verdict"] in ("helped", "hurt", "no measurable difference")
    assert "seeds x cells" in test["method"] and test["cells"] == result["cells"] <= 64
    assert f"| mine | no | bicubic | 64 ({result['cells']}) |" in (tmp_path / "native_sr.md").read_text()
    assert REPO_ROOT.joinpath("scripts", "native_sr.py").is_file()
