"""Image folders as labelled sources: `root/<class>/**` or `root/{train,val,test}/<class>/**`, any image format."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from wbc.data.decode import DEFAULT_MAX_PIXELS, is_image_file, read_image
from wbc.data.samples import Sample

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
    """Folder (or label) names -> class names, case-insensitive; several names may map to one class."""

    def __init__(self, class_names: Sequence[str], mapping: Mapping[str, str] | None = None):
        self.class_names = list(class_names)
        if mapping is None:
            mapping = {name: name for name in self.class_names}
        self.mapping = {str(k).lower(): str(v) for k, v in mapping.items()}
        unknown = sorted(set(self.mapping.values()) - set(self.class_names))
        if unknown:
            raise ValueError(f"class mapping targets {unknown} are not in class_names {self.class_names}")

    def index(self, folder_name: str) -> int | None:
        """Class index of a folder name, or None when the mapping does not know it."""
        target = self.mapping.get(folder_name.lower())
        return None if target is None else self.class_names.index(target)


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
    ):
        self.root = Path(root).expanduser()
        self.mapping = ClassMapping(class_names, class_map)
        self.class_names = self.mapping.class_names
        self.name = name
        self.max_pixels = max_pixels
        self.unknown_folders: dict[str, int] = {}
        self.skipped_files: list[str] = []

    def _class_folders(self) -> list[tuple[Path, str | None]]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"data.root={self.root} is not a folder (resolved: {self.root.resolve()})")
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
        for folder, count in self.unknown_folders.items():
            log.warning(
                "%s: folder %r is not in the class mapping; its %d images are skipped (map it in data.class_map)",
                self.root,
                folder,
                count,
            )
        if not samples:
            raise ValueError(
                f"{self.root}: no images of the classes {self.class_names} found "
                f"(folders seen: {[f.name for f, _ in self._class_folders()]})"
            )
        return samples

    def load(self, sample: Sample, min_size: int | None = None) -> np.ndarray:
        """The decoded image; ``min_size``: the caller shrinks it to that size (allows a faster JPEG decode)."""
        return read_image(sample.path, max_pixels=self.max_pixels, min_size=min_size)

    def cache_token(self) -> str:
        # Content keys identify the images already; the token only separates sources by kind.
        return f"folder:{self.name}"
