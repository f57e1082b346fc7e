"""Folder sources: layouts, class mapping, formats, unknown folders, symlink loops."""

import os

import numpy as np
import pytest

from tests.helpers import CLASSES, PBC_MAP, write_image
from wbc.data.sources import ClassMapping, FolderSource, content_key


def test_mapping_is_case_insensitive_and_many_to_one():
    m = ClassMapping(CLASSES, PBC_MAP)
    assert m.index("EOSINOPHIL") == m.index("basophil") == 3
    assert m.index("platelet") is None
    with pytest.raises(ValueError, match="not in class_names"):
        ClassMapping(CLASSES, {"x": "Erythroblast"})


def test_class_folders_any_depth_and_format(tmp_path):
    rng = np.random.default_rng(0)
    write_image(tmp_path / "Neutrophil" / "a.jpg", rng)
    write_image(tmp_path / "neutrophil" / "deep" / "er" / "b.PNG", rng)
    write_image(tmp_path / "Basophil" / "c.bmp", rng, mode="L")
    write_image(tmp_path / "eosinophil" / "d.tif", rng)
    write_image(tmp_path / "platelet" / "e.png", rng)
    (tmp_path / "Neutrophil" / "notes.txt").write_text("not an image and not listed")
    source = FolderSource(tmp_path, CLASSES, PBC_MAP)
    samples = source.scan()
    by_name = {os.path.basename(s.path): s for s in samples}
    assert set(by_name) == {"a.jpg", "b.PNG", "c.bmp", "d.tif"}
    assert by_name["b.PNG"].label == 0 and by_name["c.bmp"].label == 3 and by_name["d.tif"].label == 3
    assert source.unknown_folders == {"platelet": 1}
    assert all(s.split is None for s in samples)
    assert source.load(by_name["c.bmp"]).shape == (44, 40, 3)


def test_split_folder_layout(tmp_path):
    rng = np.random.default_rng(1)
    for split in ("train", "Val", "test"):
        for cls in ("Lymphocyte", "Monocyte"):
            write_image(tmp_path / split / cls / f"{split}-{cls}.png", rng)
    samples = FolderSource(tmp_path, CLASSES).scan()
    assert sorted({s.split for s in samples}) == ["test", "train", "val"]
    assert len(samples) == 6


def test_identical_files_share_a_key(tmp_path):
    rng = np.random.default_rng(2)
    a = write_image(tmp_path / "Monocyte" / "a.png", rng)
    (tmp_path / "Monocyte" / "copy.png").write_bytes(a.read_bytes())
    keys = {os.path.basename(s.path): s.key for s in FolderSource(tmp_path, CLASSES).scan()}
    assert keys["a.png"] == keys["copy.png"] == content_key(a)


def test_symlink_loop_does_not_hang(tmp_path):
    rng = np.random.default_rng(3)
    write_image(tmp_path / "Monocyte" / "x" / "a.png", rng)
    os.symlink(tmp_path / "Monocyte", tmp_path / "Monocyte" / "x" / "loop")
    samples = FolderSource(tmp_path, CLASSES).scan()
    assert [os.path.basename(s.path) for s in samples] == ["a.png"]


def test_missing_root_and_empty_source_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        FolderSource(tmp_path / "nope", CLASSES).scan()
    (tmp_path / "platelet").mkdir()
    with pytest.raises(ValueError, match="no images of the classes"):
        FolderSource(tmp_path, CLASSES).scan()
