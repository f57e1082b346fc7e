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

from tests.helpers import FOLDERS, PBC_MAP, REPO_ROOT, write_image
from wbc.predict import CheckpointError, Predictor, load_checkpoint, run
from wbc.prior import estimate_prior, reweight, split_prior, training_prior


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
        "adapt_bn": False,
        "adapt_min_images": 32,
        "adapt_bn_layers": "auto",
        "um_per_px": None,
        "review_confidence": 0.6,
    }
    return OmegaConf.create({**base, **kw})


def read_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("fixture", ["trained", "trained_framed"])
def test_prediction_reproduces_the_test_metrics(fixture, request, tmp_path):
    run_dir, class_map = request.getfixturevalue(fixture)
    # scale framing measures each input folder's pixel size; the training run's is given here, as a user of the
    # same microscope would
    hparams = torch.load(run_dir / "checkpoints/best.ckpt", weights_only=False)["hyper_parameters"]
    um_per_px = hparams["preprocessing"].get("train_um_per_px")
    if fixture == "trained_framed":  # the training cells' sizes per class, for predict.py's check of a pixel size
        sizes = hparams["preprocessing"]["train_class_cell_um"]
        assert len(sizes) >= 3 and set(sizes) <= set(hparams["class_names"]) and min(sizes.values()) > 0
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
        um_per_px=um_per_px,
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


def test_tta_auto_follows_the_checkpoints_recipe(trained, tmp_path, caplog):
    """tta=auto (the default) predicts as the checkpoint's recipe was tested: off for a model trained without
    tta, the eight views averaged for one trained with tta=true (experiment=pbc_robust); anything else is refused."""
    run_dir, _ = trained
    ckpt = torch.load(run_dir / "checkpoints/best.ckpt", map_location="cpu", weights_only=False)
    ckpt["hyper_parameters"]["tta"] = True
    with_tta = tmp_path / "with_tta.ckpt"
    torch.save(ckpt, with_tta)
    folder = tmp_path / "few"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    for name, path, expect in (("plain", run_dir / "checkpoints/best.ckpt", False), ("tta", with_tta, True)):
        assert run(predict_cfg(tmp_path / name, path, folder, tta="auto")) == 0
        assert json.loads((tmp_path / name / "summary.json").read_text())["tta"] is expect
    explicit = predict_cfg(tmp_path / "explicit", run_dir / "checkpoints/best.ckpt", folder, tta=True)
    assert run(explicit) == 0
    same = [[r[k] for k in r if k.startswith("p/")] for r in read_rows(tmp_path / "explicit/predictions.csv")]
    assert same == [[r[k] for k in r if k.startswith("p/")] for r in read_rows(tmp_path / "tta/predictions.csv")]
    assert run(predict_cfg(tmp_path / "bad", with_tta, folder, tta="maybe")) == 2
    assert "tta=maybe: use true, false or auto" in caplog.text


@pytest.mark.slow
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
    no_ckpt = predict(f"input={tmp_path / 'empty'}")
    assert no_ckpt.returncode == 2 and "Traceback" not in no_ckpt.stdout + no_ckpt.stderr
    assert "ckpt_path is required (it is ??? in the config): add ckpt_path=..." in no_ckpt.stdout + no_ckpt.stderr
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
    with pytest.raises(CheckpointError, match="takes one checkpoint file.*cross_dataset.py"):
        load_checkpoint(OmegaConf.create(["a.ckpt", "b.ckpt"]))  # predict.py 'ckpt_path=[a.ckpt,b.ckpt]'
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


def test_evaluate_says_which_folders_it_leaves_out(trained, tmp_path, caplog):
    run_dir, _ = trained
    rng = np.random.default_rng(5)
    folder = tmp_path / "lab"
    # PBC's folder names map by default (class_map=null), as do folders named like the classes; platelet does not
    for name, n in (("eosinophil", 3), ("basophil", 2), ("Monocyte", 2), ("platelet", 4)):
        for i in range(n):
            write_image(folder / name / f"{i}.png", rng)
    write_image(folder / "loose.png", rng)
    cfg = predict_cfg(tmp_path / "out", run_dir / "checkpoints/best.ckpt", folder, evaluate=True)
    with caplog.at_level("INFO", logger="wbc.predict"):
        assert run(cfg) == 0
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    warnings = [m for level, m in lines if level == "WARNING"]
    assert any(
        "folder platelet/ (4 images) is not in the class mapping" in m and "NOT evaluated" in m for m in warnings
    )
    assert any("1 images in" in m and "in no class folder" in m for m in warnings)
    assert any(
        "5 of 12 predicted files NOT evaluated" in m and "platelet/=4, in no class folder=1" in m for m in warnings
    )
    assert any("platelet: <class>" in m for m in warnings)  # how to map it, with every folder (a whole class_map)
    assert any(m.startswith("evaluated 7 labelled files (5 unlabelled, not evaluated)") for _, m in lines)

    evaluation = json.loads((tmp_path / "out/summary.json").read_text())["evaluation"]
    assert evaluation["labelled"] == 7 and evaluation["unlabelled"] == 5
    assert evaluation["unmapped_folders"] == {"platelet": 4} and evaluation["outside_class_folders"] == 1
    assert evaluation["class_map"] == {
        "Monocyte": "Monocyte",
        "basophil": "Eosinophil/Basophil",
        "eosinophil": "Eosinophil/Basophil",
    }
    metrics = json.loads((tmp_path / "out/metrics.json").read_text())
    assert (metrics["labelled"], metrics["unlabelled"], metrics["unmapped_folders"]) == (7, 5, {"platelet": 4})
    assert sum(map(sum, metrics["test_confusion_matrix"])) == 7
    # Neutrophil and Lymphocyte are absent: null per-class values, outside the macro means (training's definition)
    test = metrics["test"]
    assert metrics["absent_classes"] == ["Neutrophil", "Lymphocyte"] == evaluation["absent_classes"]
    assert all(
        test[f"test/{m}/{c}"] is None for m in ("precision", "recall", "f1") for c in ("Neutrophil", "Lymphocyte")
    )
    f1 = [test[f"test/f1/{c}"] for c in ("Monocyte", "Eosinophil/Basophil")]
    assert test["test/f1_macro"] == pytest.approx(sum(f1) / 2) and test["test/f1_macro_n_classes"] == 2
    assert evaluation["f1_macro_n_classes"] == 2


def test_evaluate_reads_class_folders_inside_split_folders(trained, tmp_path, caplog):
    """A labelled set shipped as <folder>/{train,test}/<class>/... is evaluated by its class folders, every split."""
    run_dir, _ = trained
    rng = np.random.default_rng(7)
    folder = tmp_path / "lab"
    layout = (("Train", "eosinophil", 2), ("Train", "monocyte", 1), ("test", "Monocyte", 2), ("test", "ig", 1))
    for split, name, n in layout:
        for i in range(n):
            write_image(folder / split / name / f"{i}.png", rng)
    write_image(folder / "test" / "loose.png", rng)
    cfg = predict_cfg(tmp_path / "out", run_dir / "checkpoints/best.ckpt", folder, evaluate=True)
    with caplog.at_level("INFO", logger="wbc.predict"):
        assert run(cfg) == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("class folders inside the split folders Train, test" in m for m in messages)
    evaluation = json.loads((tmp_path / "out/summary.json").read_text())["evaluation"]
    assert evaluation["split_folders"] == ["Train", "test"]
    assert evaluation["labelled"] == 5 and evaluation["unlabelled"] == 2  # ig/ and the loose file
    assert evaluation["unmapped_folders"] == {"ig": 1} and evaluation["outside_class_folders"] == 1
    assert evaluation["class_map"] == {
        "Monocyte": "Monocyte",
        "eosinophil": "Eosinophil/Basophil",
        "monocyte": "Monocyte",
    }
    rows = {Path(r["path"]).relative_to(folder).as_posix(): r for r in read_rows(tmp_path / "out/predictions.csv")}
    assert rows["test/Monocyte/0.png"]["label"] == "Monocyte" and rows["Train/eosinophil/1.png"]["label"] == (
        "Eosinophil/Basophil"
    )


def test_split_folder_names_that_are_class_folders_stay_class_folders(tmp_path):
    """Split folders are recognised only when no top folder is a class folder the mapping knows."""
    from wbc.predict import evaluation_mapping, folder_labels

    names = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
    files = [tmp_path / "test" / "monocyte" / "a.png", tmp_path / "monocyte" / "b.png"]
    found = folder_labels(files, tmp_path, evaluation_mapping(names, None))
    assert found.splits is None and found.labels == [None, 2] and found.unmapped == {"test": 1}
    found = folder_labels(files[:1], tmp_path, evaluation_mapping(names, None))
    assert found.splits == ["test"] and found.labels == [2]


def test_default_evaluation_mapping_knows_plural_folder_names():
    """Folders named in the plural (Neutrophils/, EOSINOPHILS/) map like the singular, with a given class_map too."""
    from wbc.predict import evaluation_mapping

    names = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
    default = evaluation_mapping(names, None)
    folders = ["Neutrophils", "lymphocytes", "Monocytes", "EOSINOPHILS", "basophils", "neutrophil"]
    assert [default.index(f) for f in folders] == [0, 1, 2, 3, 3, 0]
    assert default.index("cells") is None and default.index("s") is None
    given = evaluation_mapping(names, {"neutrophil": "Neutrophil", "lymphos": "Lymphocyte"})
    assert [given.index(f) for f in ["Neutrophils", "lymphos", "lympho", "monocytes"]] == [0, 1, None, None]


def test_images_loose_in_split_folders_are_refused_naming_where_they_sit(tmp_path):
    """Split folders holding images but no class folders: the refusal says where the images are and what is needed."""
    from wbc.errors import UserError
    from wbc.predict import evaluation_mapping, folder_labels

    names = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
    files = [tmp_path / "train" / "a.png", tmp_path / "test" / "b.png"]
    needs = r"directly in its split folders \(test, train\).*<folder>/\{train,val,test\}/<class>"
    with pytest.raises(UserError, match=needs):
        folder_labels(files, tmp_path, evaluation_mapping(names, None))
    with pytest.raises(UserError, match=r"the images sit directly in it\)"):
        folder_labels([tmp_path / "a.png"], tmp_path, evaluation_mapping(names, None))


def test_evaluate_with_a_mapping_that_maps_nothing_says_which_key_to_set(trained, tmp_path, caplog):
    run_dir, _ = trained
    rng = np.random.default_rng(6)
    for name in ("neut", "lymp", "mixt"):
        write_image(tmp_path / "lab" / name / "a.png", rng)
    cfg = predict_cfg(tmp_path / "out", run_dir / "checkpoints/best.ckpt", tmp_path / "lab", evaluate=True)
    with caplog.at_level("INFO", logger="wbc.predict"):
        assert run(cfg) == 2
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "none of the folders of" in error and "(lymp, mixt, neut)" in error
    assert "set class_map, e.g. 'class_map={lymp: Lymphocyte, mixt: <class>, neut: Neutrophil}'" in error
    assert not (tmp_path / "out/predictions.csv").exists()  # stopped before predicting
    # a given class_map that leaves a folder out: the hint adds it
    given = predict_cfg(tmp_path / "out2", cfg.ckpt_path, tmp_path / "lab", evaluate=True,
                        class_map=OmegaConf.create({"neut": "Neutrophil", "lymp": "Lymphocyte"}))  # fmt: skip
    caplog.clear()
    with caplog.at_level("INFO", logger="wbc.predict"):
        assert run(given) == 0
    assert any("+class_map.mixt=<class>" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    glob_input = predict_cfg(tmp_path / "out3", cfg.ckpt_path, str(tmp_path / "lab/*/*.png"), evaluate=True)
    assert run(glob_input) == 2


def test_evaluate_maps_pbc_folder_names_by_default(trained, tmp_path, lisc_root):
    """A user's first evaluation: another lab's folder, named as PBC names its folders (LISC), no class_map."""
    run_dir, _ = trained
    cfg = predict_cfg(tmp_path / "out", run_dir / "checkpoints/best.ckpt", lisc_root, evaluate=True)
    assert run(cfg) == 0
    evaluation = json.loads((tmp_path / "out/summary.json").read_text())["evaluation"]
    assert evaluation["labelled"] == 1287 and evaluation["unlabelled"] == 0 and evaluation["unmapped_folders"] == {}
    assert evaluation["class_map"] == PBC_MAP  # the one definition: conf/data/pbc.yaml


def test_odd_inputs_are_flagged_for_review(trained, tmp_path):
    """An 8x8 image and a grey-scale copy of a cell never come back as confident, unflagged predictions."""
    run_dir, _ = trained
    cell = np.asarray(Image.open(next((run_dir.parent / "data").rglob("*.png"))).convert("RGB"))
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(cell).save(folder / "cell.png")
    Image.fromarray(cell).convert("L").save(folder / "grey.png")
    Image.fromarray(cell[::8, ::8][:8, :8]).save(folder / "tiny.png")
    cfg = predict_cfg(tmp_path / "out", run_dir / "checkpoints/best.ckpt", folder, review_confidence=0.0)
    assert run(cfg) == 0
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "out/predictions.csv")}
    assert "grey-scale" in rows["grey.png"]["review"]
    assert "low resolution (8 px" in rows["tiny.png"]["review"]
    assert rows["cell.png"]["review"] == ""
    summary = json.loads((tmp_path / "out/summary.json").read_text())
    assert summary["review"] == 2
    # a threshold above every confidence flags every prediction
    cfg = predict_cfg(tmp_path / "out2", run_dir / "checkpoints/best.ckpt", folder, review_confidence=1.01)
    assert run(cfg) == 0
    assert all("low confidence" in r["review"] for r in read_rows(tmp_path / "out2/predictions.csv"))


def test_adapt_bn_needs_enough_images_and_changes_predictions(trained, tmp_path):
    run_dir, class_map = trained
    data = run_dir.parent / "data"
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(data.rglob("*.png"))[:10]:
        (few / f.name).symlink_to(f)
    ckpt = run_dir / "checkpoints/best.ckpt"
    assert run(predict_cfg(tmp_path / "o1", ckpt, few, adapt_bn=True)) == 2
    assert not (tmp_path / "o1/predictions.csv").exists()
    assert run(predict_cfg(tmp_path / "o2", ckpt, data, adapt_bn=True)) == 0
    summary = json.loads((tmp_path / "o2/summary.json").read_text())
    assert summary["adapt_bn_images"] == summary["predicted"] == len(list(data.rglob("*.png")))
    assert run(predict_cfg(tmp_path / "o3", ckpt, data)) == 0
    adapted = [r["confidence"] for r in read_rows(tmp_path / "o2/predictions.csv")]
    plain = [r["confidence"] for r in read_rows(tmp_path / "o3/predictions.csv")]
    assert adapted != plain
    # the first batch norm only: other predictions again; a name that is not a layer of the network: refused
    assert run(predict_cfg(tmp_path / "o4", ckpt, data, adapt_bn=True, adapt_bn_layers=["net.features.1"])) == 0
    stem = [r["confidence"] for r in read_rows(tmp_path / "o4/predictions.csv")]
    assert stem not in (plain, adapted)
    assert run(predict_cfg(tmp_path / "o5", ckpt, data, adapt_bn=True, adapt_bn_layers=["net.nolayer"])) == 2


def test_prior_moves_the_probabilities_by_bayes_rule(trained, tmp_path, caplog):
    """prior=uniform and prior=folder give the classifier's probabilities reweighted by the mix over the training
    mix (read back from predictions.csv); folder's mix is the EM estimate, in summary.json; the overlays name the
    final prediction; a folder too small to estimate is refused when folder is asked for by name."""
    caplog.set_level("INFO")
    run_dir, _ = trained
    data, ckpt = run_dir.parent / "data", run_dir / "checkpoints/best.ckpt"
    hparams = torch.load(ckpt, map_location="cpu", weights_only=False)["hyper_parameters"]
    source = training_prior(hparams, len(hparams["class_names"]))
    np.testing.assert_allclose(source, split_prior(hparams["class_counts"], balanced=False))  # recorded by training

    def probabilities(name: str) -> np.ndarray:
        return np.array(
            [[float(r[k]) for k in r if k.startswith("p/")] for r in read_rows(tmp_path / name / "predictions.csv")]
        )

    for prior in ("train", "uniform", "folder"):
        assert run(predict_cfg(tmp_path / prior, ckpt, data, prior=prior, save_overlays=prior == "folder")) == 0
    plain = probabilities("train")
    n = plain.shape[1]
    np.testing.assert_allclose(probabilities("uniform"), reweight(plain, source, np.full(n, 1 / n)), atol=2e-6)
    summary = json.loads((tmp_path / "folder/summary.json").read_text())
    assert summary["prior"] == "folder" and summary["training_mix"] == pytest.approx(source.tolist())
    mix = np.array(summary["mix"])
    np.testing.assert_allclose(mix, estimate_prior(plain, source)[0], atol=1e-4)
    np.testing.assert_allclose(probabilities("folder"), reweight(plain, source, mix), atol=2e-5)
    assert "prior=folder: probabilities moved to the class mix" in caplog.text
    rows = read_rows(tmp_path / "folder/predictions.csv")
    names = {p.name for p in (tmp_path / "folder/overlays").rglob("*.png")}
    assert len(names) == len(rows)  # every image drawn, in the second pass, with its final prediction
    few = tmp_path / "few"
    few.mkdir()
    for f in sorted(data.rglob("*.png"))[:5]:
        (few / f.name).symlink_to(f)
    assert run(predict_cfg(tmp_path / "few_out", ckpt, few, prior="folder")) == 2
    assert "needs at least 64 predicted images; got 5" in caplog.text
    assert run(predict_cfg(tmp_path / "bad", ckpt, data, prior="often")) == 2
    assert "prior=often: use train, uniform, folder" in caplog.text
    # both refused before predicting anything
    assert not (tmp_path / "few_out/predictions.csv").exists() and not (tmp_path / "bad/predictions.csv").exists()


def test_evaluate_writes_calibration_and_coverage(trained, tmp_path):
    run_dir, class_map = trained
    cfg = predict_cfg(
        tmp_path / "out",
        run_dir / "checkpoints/best.ckpt",
        run_dir.parent / "data",
        evaluate=True,
        class_map=OmegaConf.create(class_map),
    )
    assert run(cfg) == 0
    summary = json.loads((tmp_path / "out/summary.json").read_text())["evaluation"]
    assert 0 <= summary["ece"] <= 1
    curve = json.loads((tmp_path / "out/coverage_accuracy.json").read_text())
    assert curve[-1]["coverage"] == 1.0
    assert curve[-1]["accuracy"] == pytest.approx(summary["accuracy"])
    assert [r["threshold"] for r in curve] == sorted((r["threshold"] for r in curve), reverse=True)
    assert (tmp_path / "out/coverage_accuracy.png").is_file()


@pytest.mark.parametrize("name", ["cnn", "resnet18"])
def test_gradcam_layer_and_map_by_hand(name):
    """The grad-cam library on our target layer (after batch norm, activation and residual add) gives the map
    computed by hand: ReLU(sum_k mean(dy/dA_k) A_k), scaled to 0..1, resized, and scaled to 0..1 again, as the
    library does."""
    import cv2

    from wbc.explain import CAM_METHODS, GradCAM, target_layer
    from wbc.models.module import WBCClassifier

    torch.manual_seed(0)
    model = WBCClassifier({"name": name}, ["a", "b", "c", "d"]).eval()
    layer = target_layer(model.net)
    assert layer is (model.net.layer4[-1] if name == "resnet18" else model.net.features[-2])  # cnn: last ReLU
    images = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    saved = {}
    handle = layer.register_forward_hook(lambda m, i, o: saved.__setitem__("act", o))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)
    logits = model(x)
    handle.remove()
    act = saved["act"]
    grads = torch.autograd.grad(logits.gather(1, logits.argmax(1, keepdim=True)).sum(), act)[0]
    cam = torch.relu((grads.mean((2, 3), keepdim=True) * act).sum(1)).detach().numpy()
    expected = []
    for c in cam:
        c = c - c.min()
        c = cv2.resize(c / (1e-7 + c.max()), (32, 32))
        c = c - c.min()
        expected.append(c / (1e-7 + c.max()))
    heat = GradCAM(model, "gradcam")(images)
    np.testing.assert_allclose(heat, np.stack(expected), atol=1e-4)
    for method in CAM_METHODS[1:]:
        other = GradCAM(model, method)(images)
        assert other.shape == (2, 32, 32) and other.min() >= 0 and other.max() <= 1 + 1e-6
    with pytest.raises(ValueError, match="gradcam_method must be one of"):
        GradCAM(model, "saliency")


def test_folder_pixel_size_from_red_cells_else_from_white_cells(tmp_path):
    """Red cells measure a folder's pixel size; a folder of crops without red cells is measured on its white
    cells against the training cells' median diameter (train_cell_um), which keeps relative sizes: the same
    cells at twice the pixels get half the pixel size. Without that ruler, no pixel size."""
    from tests.data.test_framing import smear
    from wbc.predict import measure_folder_um_per_px

    def folder(name, k, n_rbc):
        paths = []
        for i, d in enumerate((100, 110, 120, 130, 140, 120)):
            image = smear(size=(360 * k, 360 * k), cell=(180 * k, 180 * k), cell_d=d * k, rbc_d=60 * k, n_rbc=n_rbc)
            paths.append(tmp_path / name / f"{i}.png")
            paths[-1].parent.mkdir(exist_ok=True)
            Image.fromarray(image).save(paths[-1])
        return paths

    with_rbc, how = measure_folder_um_per_px(folder("rbc", 1, 6), threads=1, cell_um=15.0)
    assert with_rbc == pytest.approx(7.5 / 60, rel=0.12) and "red cells" in how
    one, how = measure_folder_um_per_px(folder("x1", 1, 0), threads=1, cell_um=15.0)
    two, _ = measure_folder_um_per_px(folder("x2", 2, 0), threads=1, cell_um=15.0)
    assert one == pytest.approx(15.0 / 120, rel=0.15) and "white cells" in how
    assert two == pytest.approx(one / 2, rel=0.05)
    none, how = measure_folder_um_per_px(folder("x1", 1, 0), threads=1)
    assert none is None and "each image framed by its own cell" in how


def test_cell_size_check_reads_a_wrong_pixel_size_class_by_class(tmp_path):
    """Drawn smears of three classes of cell sizes: measured with the pixel size the training sizes were taken
    with, each class reads 1; with a pixel size 10 % too small, 0.9 and a warning; too few classes or a
    checkpoint without training sizes: no check. Unreadable files are left out."""
    from tests.data.test_framing import smear
    from wbc.data.framing import locate_cell
    from wbc.data.pipeline import Preprocessor
    from wbc.models.module import WBCClassifier
    from wbc.predict import SIZE_MIN_CELLS, check_cell_sizes

    classes = ["Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil"]
    sizes = {0: 100, 1: 70, 2: 130}  # cell diameters in pixels per class; no Eosinophil/Basophil
    files, truth, diameters = [], [], {}
    for k, d in sizes.items():
        for i in range(SIZE_MIN_CELLS):
            path = tmp_path / f"{k}_{i}.png"
            image = smear(cell_d=d, rbc_d=50, n_rbc=4, seed=10 * k + i)
            Image.fromarray(image).save(path)
            files.append(path)
            truth.append(k)
            diameters.setdefault(classes[k], []).append(locate_cell(image).cell_diameter)
    files.append(tmp_path / "broken.png")
    files[-1].write_bytes(b"not an image")
    probs = torch.nn.functional.one_hot(torch.tensor([*truth, 0]), 4).float()
    probs[-1] = float("nan")  # the broken file was not predicted
    train = {c: float(np.median(v)) * 0.1 for c, v in diameters.items()}  # um at 0.1 um per pixel
    model = WBCClassifier({"name": "cnn", "channels": [4], "hidden": 4}, classes)
    model.hparams["preprocessing"] = {"train_class_cell_um": train}
    predictor = Predictor(model, Preprocessor(16))

    right = check_cell_sizes(predictor, files, probs, 0.1, threads=1)
    assert right["ratio"] == pytest.approx(1.0) and not right["warn"]
    assert set(right["per_class"]) == {"Neutrophil", "Lymphocyte", "Monocyte"}
    assert all(v["cells"] == SIZE_MIN_CELLS for v in right["per_class"].values())
    wrong = check_cell_sizes(predictor, files, probs, 0.09, threads=1)
    assert wrong["ratio"] == pytest.approx(0.9) and wrong["warn"]
    assert check_cell_sizes(predictor, files[SIZE_MIN_CELLS:], probs[SIZE_MIN_CELLS:], 0.1, threads=1) is None
    assert check_cell_sizes(predictor, files, probs, None, threads=1) is None
    model.hparams["preprocessing"] = {}
    assert check_cell_sizes(predictor, files, probs, 0.1, threads=1) is None
