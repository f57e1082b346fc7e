"""Image folders as labelled sources: `root/<class>/**` or `root/{train,val,test}/<class>/**`, any image format."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wbc.data.decode import DEFAULT_MAX_PIXELS, is_image_file, read_image
from wbc.data.samples import Sample
from wbc.errors import UserError

log = logging.getLogger(__name__)

# Folder names that mark a source's own split layout, and the split each means.
SPLIT_DIRS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def content_key(path: str | os.PathLike) -> str:
    """Hash of a file's bytes: files with equal keys are the same image, whatever their names."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def walk_files(root: Path) -> list[Path]:
    """All files below ``root``, sorted, following symlinks but never entering a directory twice (loops)."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            st = folder.stat()
        except OSError as err:
            log.warning("%s: cannot read folder (%s)", folder, err.strerror or err)
            continue
        if (st.st_dev, st.st_ino) in seen:
            continue
        seen.add((st.st_dev, st.st_ino))
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as err:
            log.warning("%s: cannot list folder (%s)", folder, err.strerror or err)
            continue
        for entry in entries:
            try:
                if entry.is_dir():
                    stack.append(Path(entry.path))
                elif entry.is_file():
                    found.append(Path(entry.path))
            except OSError:  # a broken link or an unreadable entry: reported by whoever opens it
                found.append(Path(entry.path))
    return sorted(found)


class ClassMapping:
    """Folder (or label) names -> class names, case-insensitive; several names may map to one class. A name the
    mapping lacks in the plural maps like its singular (labs name folders ``Neutrophils/`` as often as ``neutrophil/``).

    ``key`` names the setting the mapping came from (``data.source.class_map``), for messages.
    """

    def __init__(self, class_names: Sequence[str], mapping: Mapping[str, str] | None = None, key: str = "class_map"):
        self.class_names = list(class_names)
        self.key = key
        self.given = mapping is not None
        if mapping is None:
            mapping = {name: name for name in self.class_names}
        self.mapping = {str(k).lower(): str(v) for k, v in mapping.items()}
        unknown = sorted(set(self.mapping.values()) - set(self.class_names))
        if unknown:
            raise UserError(
                f"{key} maps folders onto {unknown}, which are not in class_names {self.class_names}: "
                f"map each folder onto one of these classes"
            )

    def index(self, folder_name: str) -> int | None:
        """Class index of a folder name (or of its singular: ``Monocytes`` -> ``monocyte``), or None when the
        mapping knows neither."""
        name = folder_name.lower()
        target = self.mapping.get(name)
        if target is None and len(name) > 1 and name.endswith("s"):
            target = self.mapping.get(name[:-1])
        return None if target is None else self.class_names.index(target)

    def guess(self, folder_name: str) -> str | None:
        """The class a folder name most likely means (its mapping, else a class or part of one, e.g. the
        "Basophil" of "Eosinophil/Basophil", that starts like it: "neut", "Baso"), for examples in messages."""
        index = self.index(folder_name)
        if index is not None:
            return self.class_names[index]
        stem = folder_name.lower()[:4]
        if len(stem) < 3:
            return None
        for name in self.class_names:
            if any(part.strip().lower().startswith(stem) for part in [name, *name.split("/")]):
                return name
        return None

    def example(self, folders: Sequence[str]) -> str:
        """A mapping of ``folders`` to show in a message: known or guessed classes, ``<class>`` where unsure."""
        return "{" + ", ".join(f"{f}: {self.guess(f) or '<class>'}" for f in folders) + "}"

    def hint(self, folders: Sequence[str]) -> str:
        """How to map ``folders`` on the command line: add keys to a given mapping, or give a whole one."""
        if self.given:
            return " ".join(f"+{self.key}.{f}={self.guess(f) or '<class>'}" for f in folders)
        return f"'{self.key}={self.example(folders)}'"


PBC_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "data" / "pbc.yaml"


def pbc_class_map() -> dict[str, str]:
    """PBC's folder names -> the four classes: ``data.source.class_map`` of conf/data/pbc.yaml, the one place
    that says it (``data=pbc`` trains with it, ``predict.py evaluate=true`` maps folders with it by default)."""
    from omegaconf import OmegaConf

    return {str(k): str(v) for k, v in OmegaConf.load(PBC_CONFIG).source.class_map.items()}


class FolderSource:
    """A labelled image folder. Class folders are the first level (below split folders, if any); images may
    sit at any depth below a class folder. Unknown class folders are reported and skipped."""

    def __init__(
        self,
        root: str | os.PathLike,
        class_names: Sequence[str],
        class_map: Mapping[str, str] | None = None,
        name: str = "folder",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        um_per_px: float | None = None,
    ):
        self.root = Path(root).expanduser()
        self.um_per_px = um_per_px  # the images' pixel size in micrometres, when known (scale framing)
        self.mapping = ClassMapping(class_names, class_map, key="data.source.class_map")
        self.class_names = self.mapping.class_names
        self.name = name
        self.max_pixels = max_pixels
        self.unknown_folders: dict[str, int] = {}
        self.skipped_files: list[str] = []

    def _class_folders(self) -> list[tuple[Path, str | None]]:
        if not self.root.is_dir():
            raise UserError(f"data.root={self.root} is not a folder (resolved: {self.root.resolve()})")
        subdirs = sorted(p for p in self.root.iterdir() if p.is_dir())
        splits = [p for p in subdirs if p.name.lower() in SPLIT_DIRS]
        if splits:
            return [(c, SPLIT_DIRS[s.name.lower()]) for s in splits for c in sorted(s.iterdir()) if c.is_dir()]
        return [(c, None) for c in subdirs]

    def scan(self) -> list[Sample]:
        samples: list[Sample] = []
        unknown: Counter[str] = Counter()
        for folder, split in self._class_folders():
            label = self.mapping.index(folder.name)
            files = [f for f in walk_files(folder) if is_image_file(f)]
            if label is None:
                unknown[str(folder.relative_to(self.root))] += len(files)
                continue
            for f in files:
                try:
                    key = content_key(f)
                except OSError as err:
                    log.warning("%s: cannot read file (%s); skipped", f, err.strerror or err)
                    self.skipped_files.append(str(f))
                    continue
                samples.append(Sample(path=str(f), label=label, key=key, split=split))
        self.unknown_folders = dict(unknown)
        seen = sorted({f.name for f, _ in self._class_folders()})
        if not seen:
            raise UserError(
                f"data.root={self.root} holds no folders: it should hold one folder of images per class "
                f"(<root>/<class>/... or <root>/{{train,val,test}}/<class>/...)"
            )
        if not samples:
            mapped = [f for f in seen if self.mapping.index(f) is not None]
            if mapped:
                raise UserError(
                    f"data.root={self.root}: its class folders ({', '.join(mapped)}) hold no readable image files "
                    f"(jpg, png, bmp, tif, webp)"
                )
            raise UserError(
                f"data.root={self.root}: none of its folders ({', '.join(seen) or 'none'}) is a class of "
                f"{self.class_names}. Map folder names onto the classes with data.source.class_map, e.g. "
                f"{self.mapping.hint(seen)} (folders left out are skipped; or point data.root at the folder that "
                f"holds the class folders)"
            )
        for folder, count in self.unknown_folders.items():
            log.warning(
                "%s: folder %r is not in data.source.class_map: its %d images are skipped (to use them: %s)",
                self.root,
                folder,
                count,
                self.mapping.hint([Path(folder).name]) if self.mapping.given else self.mapping.hint(seen),
            )
        return samples

    def load(self, sample: Sample, min_size: int | None = None) -> np.ndarray:
        """The decoded image; ``min_size``: the caller shrinks it to that size (allows a faster JPEG decode)."""
        return read_image(sample.path, max_pixels=self.max_pixels, min_size=min_size)

    def cache_token(self) -> str:
        # Content keys identify the images already; the token only separates sources by kind.
        return f"folder:{self.name}"


ROOT_EXAMPLES = {"pbc": "/path/to/PBC_dataset_normal_DIB"}  # what data.root usually looks like, per data option


def require_root(data: Any, option: str | None = None) -> None:
    """Stop with one line when a folder source (data=folder, data=pbc) has no data.root (``???`` or null).

    ``data`` is the ``data`` node of the config; ``option`` the data option chosen (default: the source's name).
    """
    source = data.get("source") or {}
    if not str(source.get("_target_", "")).endswith("FolderSource"):
        return
    if "root" in data and data.get("root") is not None:  # `in` is False for a ??? (missing) value
        return
    option = option or source.get("name", "folder")
    class_map = source.get("class_map")
    folders = ", ".join(f"{name}/" for name in (class_map or source.get("class_names") or []))
    raise UserError(
        f"data.root is required for data={option}: the folder that holds the class folders ({folders}; or "
        f"train/, val/, test/ with those inside), e.g. data.root={ROOT_EXAMPLES.get(option, '/path/to/images')}"
    )
