"""predict.py: the checkpoint alone reproduces the test metrics; every input file gets a row; clear errors."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from tests.helpers import FOLDERS, REPO_ROOT
from wbc.predict import CheckpointError, Predictor, load_checkpoint, run


def predict_cfg(out: Path, ckpt: Path, input_path, **kw):
    base = {
        "ckpt_path": str(ckpt),
        "input": str(input_path),
        "output_dir": str(out),
        "batch_size": 8,
        "device": "cpu",
        "decode_threads": 2,
        "tta": False,
        "save_overlays": False,
        "gradcam": False,
        "evaluate": False,
        "class_map": None,
        "max_pixels": 89478485,
        "trust_checkpoint": False,
    }
    return OmegaConf.create({**base, **kw})


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_prediction_reproduces_the_test_metrics(trained, tmp_path):
    run_dir, class_map = trained
    train_metrics = json.loads((run_dir / "metrics.json").read_text())
    test_rows = read_rows(run_dir / "test_predictions.csv")
    # the test split's own files, in class folders, predicted from the checkpoint alone
    test_set = tmp_path / "test_set"
    for r in test_rows:
        src = Path(r["path"])
        (test_set / src.parent.name).mkdir(parents=True, exist_ok=True)
        (test_set / src.parent.name / src.name).symlink_to(src.resolve())
    cfg = predict_cfg(
        tmp_path / "out",
        run_dir / "checkpoints/best.ckpt",
        test_set,
        evaluate=True,
        class_map=OmegaConf.create(class_map),
    )
    assert run(cfg) == 0
    evaluated = json.loads((tmp_path / "out/metrics.json").read_text())
    for name in ("test/accuracy", "test/f1_macro", "test/specificity/Monocyte", "test/auroc_macro"):
        assert evaluated["test"][name] == pytest.approx(train_metrics["test"][name], abs=1e-6), name
    assert evaluated["test_confusion_matrix"] == train_metrics["test_confusion_matrix"]
    predicted = {Path(r["path"]).name: r for r in read_rows(tmp_path / "out/predictions.csv")}
    for r in test_rows:
        p = predicted[Path(r["path"]).name]
        assert p["predicted"] == r["predicted"] and p["label"] == r["label"]
        assert float(p["confidence"]) == pytest.approx(float(r["confidence"]), abs=1e-5)
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png", "per_class_metrics.png"):
        assert (tmp_path / "out" / name).is_file()


def make_bad_folder(root: Path) -> dict[str, str]:
    """Every kind of awkward input; returns {relative path: expected error fragment or '' for a prediction}."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (48, 52, 3), dtype=np.uint8)
    expect: dict[str, str] = {}

    def add(rel: str, expected: str) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        expect[rel] = expected
        return path

    Image.fromarray(rgb).save(add("good.jpg", ""))
    good = (root / "good.jpg").read_bytes()
    add("truncated.jpg", "truncated").write_bytes(good[: len(good) // 2])
    add("empty.jpg", "empty file").write_bytes(b"")
    add("notes.png", "not a readable image").write_text("this is text, not a PNG")
    Image.fromarray(rgb[..., 0].astype(np.uint16) * 257).save(add("deep/sixteen_bit.tif", ""))
    Image.fromarray(rgb).convert("L").save(add("deep/er/grey.png", ""))
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(add("rgba.png", ""))
    Image.fromarray(rgb).convert("CMYK").save(add("cmyk.jpg", ""))
    Image.new("1", (10_000, 10_000)).save(add("bomb.png", "decompression-bomb guard"))
    Image.fromarray(rgb).save(add("zelle_ñ_白血球.png", ""))
    add("readme.txt", "not an image file type").write_text("a note")
    (root / "empty_folder").mkdir()
    os.symlink(root / "deep", root / "deep" / "loop")  # a symlink loop: must not hang or repeat files
    return expect


def test_every_file_gets_a_row(trained, tmp_path):
    run_dir, _ = trained
    folder = tmp_path / "inbox"
    expect = make_bad_folder(folder)
    cfg = predict_cfg(tmp_path / "out", run_dir / "checkpoints/last.ckpt", folder, save_overlays=True, gradcam=True)
    assert run(cfg) == 0
    rows = {str(Path(r["path"]).relative_to(folder)): r for r in read_rows(tmp_path / "out/predictions.csv")}
    assert set(rows) == set(expect)
    for rel, fragment in expect.items():
        row = rows[rel]
        if fragment:
            assert fragment in row["error"] and row["predicted"] == "", (rel, row["error"])
        else:
            assert row["error"] == "" and row["predicted"] in FOLDERS.values(), (rel, row["error"])
            probs = [float(v) for k, v in row.items() if k.startswith("p/")]
            assert sum(probs) == pytest.approx(1.0, abs=1e-4)
            assert (tmp_path / "out/overlays" / Path(rel).with_suffix(".png")).is_file()
            assert (tmp_path / "out/gradcam" / Path(rel).with_suffix(".png")).is_file()
    summary = json.loads((tmp_path / "out/summary.json").read_text(encoding="utf-8"))
    assert summary["files"] == len(expect) and summary["errors"] == sum(bool(v) for v in expect.values())
    assert sum(summary["per_class"].values()) == summary["predicted"]


def test_tta_and_single_file_and_glob(trained, tmp_path):
    run_dir, _ = trained
    folder = tmp_path / "few"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    ckpt = run_dir / "checkpoints/best.ckpt"
    assert run(predict_cfg(tmp_path / "a", ckpt, folder / "1.png")) == 0
    assert len(read_rows(tmp_path / "a/predictions.csv")) == 1
    assert run(predict_cfg(tmp_path / "b", ckpt, str(folder / "*.png"), tta=True)) == 0
    rows = read_rows(tmp_path / "b/predictions.csv")
    assert len(rows) == 3 and all(r["error"] == "" for r in rows)


def test_tta_averages_the_eight_views(trained):
    run_dir, _ = trained
    predictor = Predictor.from_checkpoint(run_dir / "checkpoints/best.ckpt", device="cpu")
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    views = [np.rot90(images, k, (1, 2)) for k in range(4)]
    views += [v[:, :, ::-1] for v in views]
    by_hand = torch.stack([predictor.probabilities(np.ascontiguousarray(v)) for v in views]).mean(0)
    torch.testing.assert_close(predictor.probabilities(images, tta=True), by_hand)


def test_exit_codes_and_messages(trained, tmp_path):
    run_dir, _ = trained
    ckpt = run_dir / "checkpoints/best.ckpt"

    def predict(*args):
        return subprocess.run(
            [sys.executable, "predict.py", f"hydra.run.dir={tmp_path / 'p'}", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    (tmp_path / "empty").mkdir()
    empty = predict(f"ckpt_path={ckpt}", f"input={tmp_path / 'empty'}")
    assert empty.returncode != 0 and "no files found" in empty.stdout + empty.stderr
    missing = predict(f"ckpt_path={ckpt}", f"input={tmp_path / 'nowhere'}")
    assert missing.returncode != 0 and "input not found" in missing.stdout + missing.stderr
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad/x.png").write_text("not an image")
    bad = predict(f"ckpt_path={ckpt}", f"input={tmp_path / 'only_bad'}")
    assert bad.returncode == 1 and "no file could be predicted" in bad.stdout + bad.stderr
    assert len(read_rows(tmp_path / "p/predictions.csv")) == 1


def test_bad_checkpoints_are_explained(trained, tmp_path):
    run_dir, _ = trained
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(os.urandom(2048))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "garbage.ckpt")
    good = torch.load(run_dir / "checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((run_dir / "checkpoints/best.ckpt").read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(truncated)
    torch.save({"state_dict": {}}, tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match="not a wbc classifier checkpoint"):
        load_checkpoint(tmp_path / "other.ckpt")
    old = {**good, "hyper_parameters": {k: v for k, v in good["hyper_parameters"].items() if k != "preprocessing"}}
    del old["wbc_format"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(CheckpointError, match="older wbc"):
        load_checkpoint(tmp_path / "old.ckpt")
    torch.save({**good, "extra": Path("x")}, tmp_path / "objects.ckpt")
    with pytest.raises(CheckpointError, match="trust_checkpoint=true"):
        load_checkpoint(tmp_path / "objects.ckpt")
    assert load_checkpoint(tmp_path / "objects.ckpt", trust=True)["extra"] == Path("x")
    wrong = {**good, "state_dict": {k: v[..., :1] if v.ndim else v for k, v in good["state_dict"].items()}}
    torch.save(wrong, tmp_path / "wrong.ckpt")
    with pytest.raises(CheckpointError, match="do not fit"):
        Predictor.from_checkpoint(tmp_path / "wrong.ckpt", device="cpu")
