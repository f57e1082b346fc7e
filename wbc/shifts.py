"""Simulated lab differences: labelled copies of held-out images, each changed in one way that other labs' images
differ from the training lab's, to see which difference a model does not survive before meeting a real lab.

Each shift is one physical difference named after what causes it, at a fixed, stated strength (not tuned to any
test set):

* ``magnified``: a 1.4x stronger objective or camera adapter (cells 1.4x larger in pixels, a smaller field);
* ``low_res``: half the pixels per micrometre (a lower objective or a coarser camera; small cells, as in LISC);
* ``tight``: a tight box around the white cell (datasets that ship detector crops): no red cell left as a ruler;
* ``blur``: defocus or a low-aperture objective, a Gaussian of 0.5 um (sigma; about twice a 0.5-NA objective's
  own blur);
* ``pale`` / ``dark``: thinner or thicker staining, every optical density times 0.6 / 1.5 (Beer-Lambert: the
  absorbance of a dye layer is proportional to its amount);
* ``hue``: another dye batch or staining protocol, the optical density of the red, green and blue channels
  times 1.3, 1.0 and 0.7 (a redder/bluer balance of the two dyes);
* ``lamp``: an unbalanced lamp and camera, red, green and blue gains 1.0, 0.9 and 0.75 and 10 % less light;
* ``jpeg``: heavy compression, JPEG quality 20.

:func:`write_shifted_sets` writes them as ``<out>/<shift>/<class folder>/<file>.jpg`` (quality 95, except
``jpeg``) for ``scripts/cross_dataset.py``; ``none`` is the images re-encoded alone, the reference row. Shifts
combine with ``+``, applied left to right: ``tight+blur`` is a blurred detector crop.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import cv2
import numpy as np

from wbc.data.decode import ImageReadError, read_image
from wbc.data.framing import locate_cell

WRITE_QUALITY = 95
Shift = Callable[[np.ndarray, float | None], np.ndarray]  # (RGB uint8 image, its um per pixel) -> RGB uint8 image


def magnified(image: np.ndarray, um_per_px: float, factor: float = 1.4) -> np.ndarray:
    """The same camera behind a ``factor`` times stronger objective: the centre 1/factor of the field, enlarged
    back to the image's size."""
    h, w = image.shape[:2]
    big = cv2.resize(image, (round(w * factor), round(h * factor)), interpolation=cv2.INTER_CUBIC)
    y, x = (big.shape[0] - h) // 2, (big.shape[1] - w) // 2
    return np.ascontiguousarray(big[y : y + h, x : x + w])


def low_res(image: np.ndarray, um_per_px: float, factor: float = 0.5) -> np.ndarray:
    """The same field on ``factor`` times fewer pixels per axis (area-averaged, as a coarser sensor does)."""
    h, w = image.shape[:2]
    return cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)


def tight(image: np.ndarray, um_per_px: float, margin: float = 0.1) -> np.ndarray:
    """The box of the located white cell with ``margin`` of its diameter on each side (the image unchanged when
    no cell is found: a detector would not have shipped it either way)."""
    loc = locate_cell(image)
    if not loc.found:
        return image
    h, w = image.shape[:2]
    half = loc.cell_diameter * (0.5 + margin)
    x0, x1 = max(0, round(loc.centre[0] - half)), min(w, round(loc.centre[0] + half))
    y0, y1 = max(0, round(loc.centre[1] - half)), min(h, round(loc.centre[1] + half))
    return np.ascontiguousarray(image[y0:y1, x0:x1])


def blur(image: np.ndarray, um_per_px: float, sigma_um: float = 0.5) -> np.ndarray:
    """Defocus: a Gaussian of ``sigma_um`` micrometres."""
    return cv2.GaussianBlur(image, (0, 0), sigma_um / um_per_px)


def optical_density(image: np.ndarray, gains: Iterable[float]) -> np.ndarray:
    """Every channel's optical density (-log of transmittance, white 255 = 0) times its gain: more or less of
    the dyes, an empty slide stays white."""
    od = -np.log((image.astype(np.float32) + 1) / 256)
    out = 256 * np.exp(-od * np.asarray(list(gains), np.float32)) - 1
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def pale(image: np.ndarray, um_per_px: float) -> np.ndarray:
    return optical_density(image, (0.6, 0.6, 0.6))


def dark(image: np.ndarray, um_per_px: float) -> np.ndarray:
    return optical_density(image, (1.5, 1.5, 1.5))


def hue(image: np.ndarray, um_per_px: float) -> np.ndarray:
    return optical_density(image, (1.3, 1.0, 0.7))


def lamp(image: np.ndarray, um_per_px: float) -> np.ndarray:
    """A warm, dimmer lamp without white balance: per-channel gains."""
    gains = 0.9 * np.asarray((1.0, 0.9, 0.75), np.float32)
    return np.clip(np.rint(image.astype(np.float32) * gains), 0, 255).astype(np.uint8)


def none(image: np.ndarray, um_per_px: float) -> np.ndarray:
    return image


SHIFTS: dict[str, Shift] = {
    "none": none,
    "magnified": magnified,
    "low_res": low_res,
    "tight": tight,
    "blur": blur,
    "pale": pale,
    "dark": dark,
    "hue": hue,
    "lamp": lamp,
    "jpeg": none,  # the change is the encoding: written at JPEG_QUALITY
}
JPEG_QUALITY = 20


def apply(name: str, image: np.ndarray, um_per_px: float) -> np.ndarray:
    """The shift ``name`` (``a+b``: a, then b) of one image; JPEG compression is the writer's."""
    for part in name.split("+"):
        image = SHIFTS[part](image, um_per_px)
    return image


def encode(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


def test_files(manifest: str | Path, split: str = "test") -> list[tuple[Path, str]]:
    """(file, class folder name) of one split of a run's split_manifest.csv; the class folder is the file's own
    parent folder (PBC's and LISC's names map onto the classes by default)."""
    with open(manifest, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    if not rows:
        raise ValueError(f"{manifest}: no {split} rows")
    return [(Path(r["path"]), Path(r["path"]).parent.name) for r in rows]


def write_shifted_sets(
    files: list[tuple[Path, str]],
    out: str | Path,
    shifts: Iterable[str] = tuple(SHIFTS),
    um_per_px: float | None = None,
) -> dict[str, dict[str, int]]:
    """One labelled folder per shift; returns per shift how many files were written and how many could not be
    read (named in ``<out>/unreadable.txt``). ``um_per_px``: the source's pixel size (blur's scale); None
    measures it on the red cells of up to 50 of the files (as scale framing does) when a blur is asked for."""
    shifts = list(shifts)
    unknown = [s for s in shifts if any(part not in SHIFTS for part in s.split("+"))]
    if unknown:
        raise ValueError(f"unknown shift(s) {', '.join(unknown)}; choose from {', '.join(SHIFTS)}")
    out = Path(out)
    if um_per_px is None and any("blur" in s.split("+") for s in shifts):
        from wbc.predict import measure_folder_um_per_px  # the pixel size as predict.py measures a folder's

        um_per_px, _ = measure_folder_um_per_px([p for p, _ in files], threads=1, max_images=50)
        if um_per_px is None:
            raise ValueError("blur needs the images' pixel size, and too few have measurable red cells: give it")
    counts = {s: {"written": 0, "unreadable": 0} for s in shifts}
    unreadable = []
    for path, folder in files:
        try:
            image = read_image(path)
        except ImageReadError as err:
            unreadable.append(f"{path}: {err}")
            for s in shifts:
                counts[s]["unreadable"] += 1
            continue
        for s in shifts:
            target = out / s / folder / (path.stem + ".jpg")
            target.parent.mkdir(parents=True, exist_ok=True)
            quality = JPEG_QUALITY if "jpeg" in s.split("+") else WRITE_QUALITY
            target.write_bytes(encode(apply(s, image, um_per_px), quality))
            counts[s]["written"] += 1
    if unreadable:
        (out / "unreadable.txt").write_text("\n".join(unreadable) + "\n")
    return counts


# Class-mix (label) shifts: a lab's folder need not hold the training split's mix of classes. Proportions of
# Neutrophil, Lymphocyte, Monocyte, Eosinophil/Basophil: a curated set with every class alike; a normal adult
# differential, as consecutive cells of one smear come (neutrophils 40-75 %, lymphocytes 20-45 %, monocytes 2-10 %,
# eosinophils and basophils 1-6 %); a lymphocyte- and monocyte-rich folder (a viral infection, a monocytosis).
CLASS_MIXES: dict[str, tuple[float, ...]] = {
    "uniform": (0.25, 0.25, 0.25, 0.25),
    "differential": (0.60, 0.30, 0.06, 0.04),
    "mono_lymph": (0.10, 0.40, 0.40, 0.10),
}


def class_mix_indices(labels: np.ndarray, proportions: Sequence[float], seed: int = 0) -> np.ndarray:
    """Indices of the largest subset of ``labels`` whose class counts follow ``proportions`` (one per class,
    summing to 1), drawn without replacement; sorted."""
    labels = np.asarray(labels)
    p = np.asarray(proportions, dtype=float)
    counts = np.bincount(labels, minlength=len(p))
    if len(counts) != len(p) or not np.isclose(p.sum(), 1):
        raise ValueError(f"class_mix_indices: {len(p)} proportions summing to 1 needed for {len(counts)} classes")
    total = min(counts[c] / p[c] for c in range(len(p)) if p[c] > 0)
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), int(total * p[c] + 1e-9), replace=False) for c in range(len(p))]
    return np.sort(np.concatenate(picked))


# --- what the studies over these sets share (scripts/adabn_layers.py, prior_shift.py, t3a_shift.py) ----------------


def add_study_arguments(parser, out: str) -> None:
    """The options every study over the shifted sets takes: checkpoints, criterion and reported folders, re-mixes."""
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--folders", nargs="+", required=True, help="name=folder: the sets the choice is made on")
    parser.add_argument("--mixes", default="", help="comma-separated names of --folders also evaluated re-mixed")
    parser.add_argument("--eval", nargs="*", default=[], help="name=folder: reported, not part of the criterion")
    parser.add_argument("--class-map", default=None, help="folder -> class, '{neut: Neutrophil, ...}'")
    parser.add_argument("--out", default=out)
    parser.add_argument("--cache", default=None, help="where preprocessed folders are cached (default: --out)")


def study_paths(args) -> tuple[Path, Path]:
    """(the output folder, made if missing; the folder preprocessed sets are cached in) from the study's options."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out, Path(args.cache) if args.cache else out


def study_sets(args) -> tuple[dict[str, str], dict[str, str], set[str], dict | None]:
    """(criterion folders, reported folders, names also re-mixed, class map) from :func:`add_study_arguments`."""
    import yaml

    folders = dict(a.split("=", 1) for a in args.folders)
    evals = dict(a.split("=", 1) for a in args.eval)
    mixed = {m for m in args.mixes.split(",") if m}
    return folders, evals, mixed, yaml.safe_load(args.class_map) if args.class_map else None


def study_mixes(labels: np.ndarray, remix: bool) -> dict[str, np.ndarray]:
    """The folder's own mix, and when ``remix`` each of :data:`CLASS_MIXES`: name -> indices of its images."""
    mixes = {"own": np.arange(len(labels))}
    if remix:
        mixes |= {m: class_mix_indices(labels, share) for m, share in CLASS_MIXES.items()}
    return mixes


def criterion_rows(results: list[dict], column: str, columns: Sequence[str], mean: Callable[[list[dict]], str]):
    """The report's summary lines: the criterion (every criterion set and mix), its re-mixed and own-mix parts;
    one cell per value of ``column`` in ``columns``, ``mean`` of the matching result rows."""
    lines = []
    for title, keep in [
        ("**criterion: mean over the sets above**", lambda r: r["criterion"]),
        ("of which re-mixed sets", lambda r: r["criterion"] and r["mix"] != "own"),
        ("of which the sets' own mix", lambda r: r["criterion"] and r["mix"] == "own"),
    ]:
        cells = [mean([r for r in results if keep(r) and r[column] == c]) for c in columns]
        lines.append(f"| {title} | | | " + " | ".join(cells) + " |")
    return lines
