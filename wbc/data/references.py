"""The cached first part of a dataset: where each image's cell is, and its S x S reference (decoded, framed, a
small crop enlarged by a native SR stage), computed once per source and configuration and memory-mapped after."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wbc.cache import cached_array, digest
from wbc.data.decode import ImageReadError
from wbc.data.framing import LOCATOR_VERSION, CellLocation, locate_cell
from wbc.data.pipeline import DataSource, Preprocessor
from wbc.data.samples import Sample

log = logging.getLogger(__name__)

PIPELINE_VERSION = 3  # bump when the deterministic pipeline's output changes for the same inputs
_LOCATION_COLUMNS = ["found", "x", "y", "cell_diameter", "rbc_diameter", "r", "g", "b"]


@dataclass
class ReferenceBuilder:
    """The references of ``samples`` (one per content key of ``keys``, in that order) from ``source`` through
    ``preprocessor``; caches under ``cache_dir`` (None: nothing cached)."""

    source: DataSource
    preprocessor: Preprocessor
    keys: list[str]
    samples: list[Sample]
    cache_dir: str | os.PathLike | None = None
    threads: int = 2

    def _path(self, kind: str, token: str) -> Path | None:
        return None if self.cache_dir is None else Path(self.cache_dir) / f"{kind}-{token}.npy"

    def _map(self, work) -> None:
        with ThreadPoolExecutor(max(1, self.threads)) as pool:
            list(pool.map(work, range(len(self.keys))))

    def locations(self) -> list[CellLocation | None]:
        """Where the white cell and the red cells are in each image (None for an unreadable file)."""
        token = digest(PIPELINE_VERSION, LOCATOR_VERSION, self.source.cache_token(), self.keys)

        def compute():
            table = np.full((len(self.keys), len(_LOCATION_COLUMNS)), np.nan)

            def work(i: int) -> None:
                try:
                    loc = locate_cell(self.source.load(self.samples[i]))
                except Exception:  # reported when the image is read again for its reference
                    return
                rbc = np.nan if loc.rbc_diameter is None else loc.rbc_diameter
                table[i] = (loc.found, *loc.centre, loc.cell_diameter, rbc, *loc.background)

            log.info("locating the cells of %d images (cached)", len(self.keys))
            self._map(work)
            return table, {"columns": _LOCATION_COLUMNS}

        table = cached_array(self._path("loc", token), compute)[0]
        return [
            None
            if np.isnan(t[0])
            else CellLocation(
                found=bool(t[0]),
                centre=(float(t[1]), float(t[2])),
                cell_diameter=float(t[3]),
                rbc_diameter=None if np.isnan(t[4]) else float(t[4]),
                background=(int(t[5]), int(t[6]), int(t[7])),
            )
            for t in np.asarray(table)
        ]

    def references(
        self, um_per_px: float | None, locations: list[CellLocation | None]
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """(N, S, S, 3) references and what happened to each image: ``failed`` {key: problem}, ``framing_used``
        {key: framing}, ``framing_notes`` {key: why it fell back}, ``small`` [keys framed at fewer pixels than S]."""
        pre, keys = self.preprocessor, self.keys
        size = pre.image_size
        native = [pre.reference_token()] if pre.enlarger is not None else []  # no change to keys without it
        token = digest(PIPELINE_VERSION, self.source.cache_token(), size, pre.framing.token(), um_per_px, keys, *native)

        def compute():
            out = np.zeros((len(keys), size, size, 3), dtype=np.uint8)
            meta: dict[str, Any] = {"keys": keys, "failed": {}, "framing_used": {}, "framing_notes": {}, "small": []}

            def work(i: int) -> None:
                try:
                    image = self.source.load(self.samples[i], min_size=pre.decode_min_size)
                    out[i], framed = pre.frame(image, um_per_px, locations[i])
                    meta["framing_used"][keys[i]] = framed.used
                    if min(framed.image.shape[:2]) < size:  # what a native SR stage enlarges
                        meta["small"].append(keys[i])
                    if framed.note:
                        meta["framing_notes"][keys[i]] = framed.note
                except ImageReadError as err:
                    meta["failed"][keys[i]] = err.problem
                except Exception as err:  # one bad image never stops a run
                    meta["failed"][keys[i]] = f"{type(err).__name__}: {err}"

            log.info("decoding and framing (%s) %d images at %d px (cached)", pre.framing.method, len(keys), size)
            self._map(work)
            return out, meta

        return cached_array(self._path("ref", token), compute)

    def enlarged(
        self,
        references: np.ndarray,
        small: set[str],
        um_per_px: float | None,
        locations: list[CellLocation | None],
    ) -> np.ndarray:
        """``references`` with every crop smaller than S framed again and enlarged by the native SR stage (once it
        is trained); unchanged when no crop is smaller than S."""
        pre = self.preprocessor
        rows = [i for i, k in enumerate(self.keys) if k in small]
        if not rows or pre.enlarger is None or not pre.enlarger.ready:
            return references
        token = digest(PIPELINE_VERSION, self.source.cache_token(), self.keys, pre.framing.token(), um_per_px,
                       pre.image_size, pre.reference_token())  # fmt: skip

        def compute():
            out = np.array(references)
            log.info("native SR (%s): enlarging %d crops smaller than %d px", pre.enlarger.name, len(rows),
                     pre.image_size)  # fmt: skip
            for i in rows:
                try:
                    out[i] = pre.frame(self.source.load(self.samples[i]), um_per_px, locations[i])[0]
                except Exception as err:  # read once already: keep its plain reference rather than stop the run
                    log.warning("native SR: %s kept its plain resize (%s)", self.samples[i].path, err)
            return out, {"enlarged": [self.keys[i] for i in rows]}

        return cached_array(self._path("native", token), compute)[0]
