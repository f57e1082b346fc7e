"""Folder sources: layouts, class mapping, formats, unknown folders, symlink loops."""

import os

import numpy as np
import pytest
from omegaconf import OmegaConf

from tests.helpers import CLASSES, PBC_MAP, compose_config, write_image
from wbc.data.sources import ClassMapping, FolderSource, content_key, require_root
from wbc.errors import UserError, explain


def test_mapping_is_case_insensitive_and_many_to_one():
    m = ClassMapping(CLASSES, PBC_MAP)
    assert m.index("EOSINOPHIL") == m.index("basophil") == 3
    assert m.index("platelet") is None
    with pytest.raises(UserError, match="data.source.class_map maps folders onto .'Erythroblast'., which are not in"):
        ClassMapping(CLASSES, {"x": "Erythroblast"}, key="data.source.class_map")


def test_folders_named_in_the_plural_train_like_the_singular(tmp_path):
    """A lab's Neutrophils/, LYMPHOCYTES/, basophils/ folders: scanned for training without a class_map, with
    PBC's class_map too; a name whose singular maps to nothing stays unknown."""
    rng = np.random.default_rng(2)
    for folder in ("Neutrophils", "LYMPHOCYTES", "Monocytes", "eosinophils", "platelets"):
        write_image(tmp_path / folder / f"{folder}.png", rng)
    for mapping, labels in ((None, {"Neutrophils": 0, "LYMPHOCYTES": 1, "Monocytes": 2}), (PBC_MAP, None)):
        source = FolderSource(tmp_path, CLASSES, mapping)
        found = {os.path.basename(os.path.dirname(s.path)): s.label for s in source.scan()}
        if mapping is None:  # folders named like the classes: "eosinophils" is not "Eosinophil/Basophil"
            assert found == labels and set(source.unknown_folders) == {"eosinophils", "platelets"}
        else:
            assert found == {"Neutrophils": 0, "LYMPHOCYTES": 1, "Monocytes": 2, "eosinophils": 3}
            assert source.unknown_folders == {"platelets": 1}


def test_mapping_guesses_classes_for_examples():
    m = ClassMapping(CLASSES)
    assert [m.guess(f) for f in ("neut", "Baso", "eosi", "lymp", "mono", "mixt", "ig")] == [
        "Neutrophil", "Eosinophil/Basophil", "Eosinophil/Basophil", "Lymphocyte", "Monocyte", None, None
    ]  # fmt: skip
    assert m.example(["neut", "mixt"]) == "{neut: Neutrophil, mixt: <class>}"
    # no mapping given: a whole mapping replaces the default; a given one gets keys added (Hydra's + syntax)
    assert m.hint(["neut"]) == "'class_map={neut: Neutrophil}'"
    given = ClassMapping(CLASSES, PBC_MAP, key="data.source.class_map")
    assert (
        given.hint(["platelet", "neut"])
        == "+data.source.class_map.platelet=<class> +data.source.class_map.neut=Neutrophil"
    )


def test_class_folders_any_depth_and_format(tmp_path, caplog):
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
    assert "not in data.source.class_map" in caplog.text and "+data.source.class_map.platelet=<class>" in caplog.text
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
    with pytest.raises(UserError, match="is not a folder"):
        FolderSource(tmp_path / "nope", CLASSES).scan()
    with pytest.raises(UserError, match="holds no folders"):
        FolderSource(tmp_path, CLASSES).scan()
    (tmp_path / "Monocyte").mkdir()
    with pytest.raises(UserError, match=r"class folders \(Monocyte\) hold no readable image files"):
        FolderSource(tmp_path, CLASSES).scan()


def test_folders_that_map_to_nothing_name_the_key_with_an_example(tmp_path):
    rng = np.random.default_rng(4)
    for folder in ("neut", "Baso", "mixt"):  # a real layout (LISC's own folder names)
        write_image(tmp_path / folder / "a.png", rng)
    with pytest.raises(UserError) as err:
        FolderSource(tmp_path, CLASSES).scan()
    message = str(err.value)
    assert "\n" not in message and "none of its folders (Baso, mixt, neut)" in message
    assert "'data.source.class_map={Baso: Eosinophil/Basophil, mixt: <class>, neut: Neutrophil}'" in message
    # with the example (less the folder it cannot guess) the same folder works
    source = FolderSource(tmp_path, CLASSES, {"Baso": "Eosinophil/Basophil", "neut": "Neutrophil"})
    assert len(source.scan()) == 2 and source.unknown_folders == {"mixt": 1}


def test_a_folder_source_without_root_says_what_root_is(tmp_path):
    cfg = compose_config(["data=pbc"], tmp_path)
    assert OmegaConf.is_missing(cfg.data, "root")  # ???, not null: the base config's keys do not hide it
    with pytest.raises(UserError) as err:
        require_root(cfg.data, "pbc")
    assert str(err.value).startswith("data.root is required for data=pbc: the folder that holds the class folders")
    assert "neutrophil/" in str(err.value) and "data.root=/path/to/PBC_dataset_normal_DIB" in str(err.value)
    with pytest.raises(UserError, match="data.root is required for data=folder.*Neutrophil/.*/path/to/images"):
        require_root(compose_config(["data=folder"], tmp_path).data, "folder")
    require_root(compose_config(["data=pbc", f"data.root={tmp_path}"], tmp_path).data)  # set: no error
    require_root(compose_config([], tmp_path).data)  # synthetic: needs no root


def test_explain_finds_the_users_mistake_behind_wrappers():
    try:
        try:
            raise UserError("data.root=x is not a folder")
        except UserError as inner:
            raise RuntimeError("Error in call to target 'wbc.data.sources.FolderSource'") from inner
    except RuntimeError as outer:
        assert explain(outer) == "data.root=x is not a folder"
    missing = OmegaConf.create({"ckpt_path": "???"})
    try:
        missing.ckpt_path  # noqa: B018
    except Exception as err:  # omegaconf's MissingMandatoryValue
        assert explain(err) == "ckpt_path is required (it is ??? in the config): add ckpt_path=... to the command line"
    assert explain(KeyError("a bug")) is None
