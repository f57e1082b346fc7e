"""MedMNIST BloodMNIST as a data source, with its official train/val/test splits.

BloodMNIST (Yang et al., "MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image
classification", Scientific Data 10:41, 2023) holds the 17,092 images of the PBC dataset (Acevedo et al., "A
dataset of microscopic peripheral blood cell images for development of automatic recognition systems", Data in
Brief 30:105474, 2020), centre-cropped to 200 x 200 and resized to 28, 64, 128 or 224 px, in 8 classes with a fixed
split (train 11,959, val 1,712, test 3,421). Licence: CC BY 4.0; cite both papers.

One ``.npz`` file per size (Zenodo record 10519652, the files MedMNIST's ``info.py`` points to) holds
``{train,val,test}_images`` (N, S, S, 3) uint8 and ``{train,val,test}_labels`` (N, 1). The file is downloaded
once into ``root`` (MedMNIST's own default is ~/.medmnist, so files its package fetched are reused) and held in
memory by each process that reads it (2.6 GB at 224 px).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import zipfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wbc.cache import digest
from wbc.data.download import download as fetch
from wbc.data.download import manual_instructions, md5sum
from wbc.data.samples import Sample
from wbc.data.sources import ClassMapping
from wbc.data.split import SPLITS
from wbc.errors import UserError

log = logging.getLogger(__name__)

RECORD_PAGE = "https://zenodo.org/records/10519652"
MEDMNIST_URLS = {
    28: f"{RECORD_PAGE}/files/bloodmnist.npz?download=1",
    64: f"{RECORD_PAGE}/files/bloodmnist_64.npz?download=1",
    128: f"{RECORD_PAGE}/files/bloodmnist_128.npz?download=1",
    224: f"{RECORD_PAGE}/files/bloodmnist_224.npz?download=1",
}
MEDMNIST_MD5 = {
    28: "7053d0359d879ad8a5505303e11de1dc",
    64: "2b94928a2ae4916078ca51e05b6b800b",
    128: "adace1e0ed228fccda1f39692059dd4c",
    224: "b718ff6835fcbdb22ba9eacccd7b2601",
}
# BloodMNIST's label index -> name ("ig": immature granulocytes, i.e. promyelocytes, myelocytes, metamyelocytes).
LABELS = ("basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet")


def file_name(size: int) -> str:
    """The official file name of a size (MedMNIST's naming: no suffix at 28 px)."""
    return "bloodmnist.npz" if size == 28 else f"bloodmnist_{size}.npz"


class BloodMNISTSource:
    """BloodMNIST images whose labels map onto ``class_names``; every sample carries its official split.

    ``label_map`` maps BloodMNIST label names (:data:`LABELS`) to class names; labels mapping to nothing are
    dropped and counted in ``dropped``. ``url``/``md5`` replace the official ones (a mirror, a test file).
    A missing file is downloaded when ``download`` is true. An existing file is trusted as it is unless
    ``verify`` is true: hashing the 1.4 GB file of the 224 px size on every run would cost more than it finds.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        size: int = 28,
        class_names: Sequence[str],
        label_map: Mapping[str, str] | None = None,
        download: bool = True,
        url: str | None = None,
        md5: str | None = None,
        verify: bool = False,
        name: str = "bloodmnist",
    ):
        if size not in MEDMNIST_URLS:
            raise UserError(f"data.size must be one of {sorted(MEDMNIST_URLS)} for BloodMNIST, got {size!r}")
        self.root = Path(root).expanduser()
        self.size = size
        self.mapping = ClassMapping(class_names, label_map, key="data.source.label_map")
        self.class_names = self.mapping.class_names
        if label_map is not None:
            unknown = sorted(set(self.mapping.mapping) - set(LABELS))
            if unknown:
                raise UserError(f"data.source.label_map keys {unknown} are not BloodMNIST labels {list(LABELS)}")
        self.download = download
        self.url = url or MEDMNIST_URLS[size]
        self.md5 = md5 or MEDMNIST_MD5[size]
        self.verify = verify
        self.name = name
        self.dropped: dict[str, int] = {}
        self._arrays: dict[str, np.ndarray] | None = None
        self._lock = threading.Lock()  # load() runs in the datamodule's decode threads
        self._checked = False

    @property
    def path(self) -> Path:
        return self.root / file_name(self.size)

    # Pickled copies (DataLoader workers, DDP) leave the arrays behind and read the file again when needed.
    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_arrays", "_lock")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _arrays=None, _lock=threading.Lock())

    def ensure_file(self) -> Path:
        """The npz file, downloaded if missing (and allowed), MD5-checked if ``verify``."""
        path = self.path
        if self._checked and path.exists():
            return path
        if not path.exists():
            if not self.download:
                raise UserError(
                    f"BloodMNIST file {path} not found and data.source.download=false: "
                    f"{manual_instructions(self.url, path, RECORD_PAGE)} (or set data.root / MEDMNIST_ROOT to "
                    "the folder that holds it, or allow data.source.download=true)"
                )
            fetch(self.url, path, self.md5, page=RECORD_PAGE)  # verifies the MD5 of what it fetched
        elif self.verify and (got := md5sum(path)) != self.md5:
            raise UserError(
                f"{path}: md5 {got}, expected {self.md5}; delete it to download it again, or set data.source.md5"
            )
        self._checked = True
        return path

    def _data(self) -> dict[str, np.ndarray]:
        with self._lock:
            if self._arrays is None:
                path = self.ensure_file()
                with np.load(path) as npz:
                    self._arrays = {k: npz[k] for k in npz.files}
                log.info("%s: %s", path, ", ".join(f"{s}={len(self._arrays[f'{s}_labels'])}" for s in SPLITS))
            return self._arrays

    def scan(self) -> list[Sample]:
        arrays = self._data()
        samples: list[Sample] = []
        dropped: Counter[str] = Counter()
        for split in SPLITS:
            images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].reshape(-1)
            if len(images) != len(labels):
                raise ValueError(f"{self.path}: {len(images)} {split} images but {len(labels)} labels")
            for i, (image, label) in enumerate(zip(images, labels, strict=True)):
                if not 0 <= label < len(LABELS):
                    raise ValueError(f"{self.path}: {split} image {i} has label {label}, not in 0..{len(LABELS) - 1}")
                target = self.mapping.index(LABELS[label])
                if target is None:
                    dropped[LABELS[label]] += 1
                    continue
                key = hashlib.blake2b(np.ascontiguousarray(image).data, digest_size=16).hexdigest()
                samples.append(Sample(path=f"{self.path.name}#{split}/{i}", label=target, key=key, split=split))
        self.dropped = dict(dropped)
        if dropped:
            log.info(
                "dropped %d %s images not in the class mapping",
                dropped.total(),
                "/".join(sorted(dropped, key=LABELS.index)),
            )
        if not samples:
            raise UserError(f"{self.path}: no images of the classes {self.class_names} (check data.source.label_map)")
        return samples

    def load(self, sample: Sample, min_size: int | None = None) -> np.ndarray:
        """The image of a sample as a C-contiguous H x W x 3 uint8 RGB copy."""
        file, _, ref = sample.path.rpartition("#")
        split, _, index = ref.partition("/")
        if file != self.path.name or split not in SPLITS or not index.isdigit():
            raise ValueError(f"{sample.path!r} is not an image of {self.path.name}")
        image = self._data()[f"{split}_images"][int(index)]
        if image.ndim == 2 or image.shape[-1] == 1:  # grayscale MedMNIST layouts: (H, W) or (H, W, 1)
            image = np.repeat(image.reshape(*image.shape[:2], 1), 3, axis=2)
        return np.array(image, dtype=np.uint8, order="C", copy=True)

    def cache_token(self) -> str:
        # The zip directory's CRC-32 of every array identifies the content without hashing the whole file
        # (cheap, unlike an MD5 of 1.4 GB), and unlike a modification time it survives copying the file.
        with zipfile.ZipFile(self.ensure_file()) as z:
            members = sorted((i.filename, i.CRC, i.file_size) for i in z.infolist())
        return f"bloodmnist:{self.size}:{digest(members)}"
