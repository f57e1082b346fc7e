"""Find the white cell in a smear image and frame it: the first step of the deterministic pipeline.

Labs frame and magnify cells differently (a 360 px field with the cell a third of it, a tight box, a 224 px crop
of a small cell). Framing makes the classifier's input comparable across them:

* ``centre``: the central square of the image, no detection (what a dataset of centred cells needs);
* ``cell``: a square centred on the white cell, its side ``CELL_FIELD_RATIO`` times the cell's diameter;
* ``scale``: the image measured in micrometres (its red cells, about 7.5 um across, are the ruler, or the
  user gives ``um_per_px``), then a square of ``field_um`` micrometres centred on the white cell: a large
  monocyte stays larger than a small lymphocyte. With no measurable red cell it falls back to ``cell``.

Detection is classic and stain-agnostic: a nucleus is the most purple (``max(R, B) - G``) part of a
Romanowsky-stained smear; three-class Otsu separates background, red cells/cytoplasm and nuclei; the nucleus
nearest the centre, its lobes joined, is the cell's; the cell is the stained region around it. When no nucleus
stands out the image keeps centre framing and the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

FRAMINGS = ("centre", "cell", "scale")
RBC_DIAMETER_UM = 7.5  # a normal red cell; the median over a field is the ruler of `scale`
TYPICAL_CELL_UM = 12.0  # a neutrophil: `cell` framing gives a typical cell the size `scale` would
DEFAULT_FIELD_UM = 30.0  # the side of a `scale` crop: a 20 um monocyte fits with margin
ANALYSIS_SIDE = 192  # detection runs on a copy whose shorter side is this (speed; sizes are scaled back)
LOCATOR_VERSION = 2  # bump when locate_cell's results change (2: tight crops retried on a padded slide; red
# cells under MIN_RBC_TO_CELL of the white cell left out)
MIN_RBC = 2  # red cells measured in one image before its median diameter counts
# A red cell (7.5 um) is never smaller than a quarter of a white cell's diameter (at most about 20 um, a monocyte;
# 30 um for the cell mask's generous outline): smaller stained objects are platelets (2-3 um), granules or the
# slivers of red cells cut by a crop's edge
MIN_RBC_TO_CELL = 0.25
PADDING_LEVEL = 20  # pixels darker than this in every channel are padding (black bands of cropped fields)


@dataclass
class CellLocation:
    """Where the white cell is, in the source image's pixels. ``found`` False: no nucleus stood out."""

    found: bool
    centre: tuple[float, float] = (0.0, 0.0)  # x, y
    cell_diameter: float = 0.0
    rbc_diameter: float | None = None  # median red-cell diameter, None when fewer than MIN_RBC were measurable
    n_rbc: int = 0
    background: tuple[int, int, int] = (255, 255, 255)  # median colour of the empty slide, for padding
    nucleus_mask: np.ndarray | None = field(default=None, repr=False)  # at analysis scale (for figures)
    cell_mask: np.ndarray | None = field(default=None, repr=False)
    analysis_scale: float = 1.0  # analysis pixels per source pixel


@dataclass
class Framed:
    """A framed crop and how it was made: ``used`` is the framing applied (after any fallback), ``note`` why
    it differs from the one asked for ('' when it does not)."""

    image: np.ndarray
    used: str
    note: str = ""
    um_per_px: float | None = None
    location: CellLocation | None = field(default=None, repr=False)


def _otsu3(values: np.ndarray) -> tuple[float, float]:
    """Two thresholds that split ``values`` (0..255) into three classes with the largest between-class
    variance (multi-level Otsu on a 256-bin histogram)."""
    hist = np.bincount(np.clip(values, 0, 255).astype(np.int64), minlength=256).astype(np.float64)
    p = hist / max(hist.sum(), 1)
    w = np.cumsum(p)
    mu = np.cumsum(p * np.arange(256))
    t1, t2 = np.triu_indices(256, k=1)  # class 0: [0, t1], class 1: (t1, t2], class 2: (t2, 255]
    w0, w1, w2 = w[t1], w[t2] - w[t1], 1.0 - w[t2]
    m0, m1, m2 = mu[t1], mu[t2] - mu[t1], mu[-1] - mu[t2]
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.nan_to_num(m0**2 / w0) + np.nan_to_num(m1**2 / w1) + np.nan_to_num(m2**2 / w2)
    var[(w0 <= 0) | (w1 <= 0) | (w2 <= 0)] = -1
    i = int(np.argmax(var))
    return float(t1[i]), float(t2[i])


def _otsu(values: np.ndarray) -> float:
    v = np.clip(values, 0, 255).astype(np.uint8).reshape(-1, 1)
    t, _ = cv2.threshold(v, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def _disc(radius: float) -> np.ndarray:
    r = max(1, int(round(radius)))
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))


def locate_cell(image: np.ndarray) -> CellLocation:
    """Find the white cell of an RGB uint8 image (the nucleus nearest the centre, and the cell around it) and
    measure the red cells of the field.

    A tight crop (a box around the white cell, as detectors ship them) has almost no slide, so the three stain
    classes that the thresholds separate (slide, cytoplasm and red cells, nucleus) are not all there and the
    nucleus does not stand out. When nothing is found the image is looked at once more, set in the middle of
    a slide of its own border's colour three times its size: the field a tight crop was cut from, without its
    red cells (and without their measurement: the crop's edges cut them)."""
    loc = _locate(image)
    if loc.found or min(image.shape[:2]) < 16:
        return loc
    h, w = image.shape[:2]
    pad = max(h, w)
    fill = _border_colour(image)
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=fill)
    again = _locate(padded)
    if not again.found:
        return loc
    s = again.analysis_scale
    y0, x0 = round(pad * s), round(pad * s)
    y1, x1 = y0 + max(1, round(h * s)), x0 + max(1, round(w * s))
    return CellLocation(  # no red-cell ruler: the crop's edges cut its red cells, which the slide now hides
        found=True,
        centre=(again.centre[0] - pad, again.centre[1] - pad),
        cell_diameter=again.cell_diameter,
        background=tuple(int(v) for v in fill),
        nucleus_mask=again.nucleus_mask[y0:y1, x0:x1],
        cell_mask=again.cell_mask[y0:y1, x0:x1],
        analysis_scale=s,
    )


def _border_colour(image: np.ndarray) -> tuple[int, int, int]:
    """The slide's colour as a tight crop's border shows it: the median of the brighter half of its border
    pixels (the corners of a box around a round cell are slide), padding bands left out."""
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(np.int32)
    border = border[border.max(axis=1) > PADDING_LEVEL]
    if len(border) == 0:
        return (255, 255, 255)
    bright = border[border.sum(axis=1) >= np.median(border.sum(axis=1))]
    return tuple(int(v) for v in np.median(bright, axis=0))


def _locate(image: np.ndarray) -> CellLocation:
    h, w = image.shape[:2]
    scale = min(1.0, ANALYSIS_SIDE / min(h, w))
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    valid = small.max(axis=2) > PADDING_LEVEL
    if min(h, w) < 16 or valid.sum() < 256:  # too small to hold a measurable cell
        return CellLocation(found=False)
    rgb = cv2.GaussianBlur(small, (3, 3), 0).astype(np.int16)
    purple = np.maximum(rgb[..., 0], rgb[..., 2]) - rgb[..., 1]
    green = rgb[..., 1]
    t_low, t_high = _otsu3(purple[valid])

    unit = min(sh, sw) / 100.0  # morphology sizes in hundredths of the analysis image
    strong = ((purple > t_high) & valid).astype(np.uint8)
    nuclei = cv2.morphologyEx(strong, cv2.MORPH_OPEN, _disc(0.8 * unit))
    nuclei = cv2.morphologyEx(nuclei, cv2.MORPH_CLOSE, _disc(3 * unit))  # join the lobes of one nucleus
    n, labels, stats, centroids = cv2.connectedComponentsWithStats(nuclei, connectivity=8)
    background_colour = _background_colour(small, valid, purple, t_low)
    if n <= 1:
        return CellLocation(found=False, background=background_colour)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    big = areas >= 0.25 * areas.max()  # platelets and stray granules are far smaller than a nucleus
    d = np.hypot(centroids[1:, 0] - sw / 2, centroids[1:, 1] - sh / 2)
    candidates = np.flatnonzero(big)
    pick = candidates[np.argmin(d[candidates])] + 1
    nucleus = (labels == pick).astype(np.uint8)
    contrast = float(np.median(purple[nucleus > 0])) - float(np.median(purple[valid & (purple <= t_low)]))
    solid = float(strong[nucleus > 0].mean())  # a stained nucleus is dense; noise closed into a blob is not
    if nucleus.sum() < 4 * unit * unit or contrast < 25 or solid < 0.7:
        return CellLocation(found=False, background=background_colour)

    hull = cv2.convexHull(cv2.findNonZero(nucleus))
    hull_mask = np.zeros_like(nucleus)
    cv2.fillConvexPoly(hull_mask, hull, 1)
    m = cv2.moments(hull_mask, binaryImage=True)
    cx, cy = m["m10"] / m["m00"], m["m01"] / m["m00"]
    hull_r = np.sqrt(hull_mask.sum() / np.pi)

    # the stained region (cells against the empty slide) around the nucleus: nucleus + cytoplasm
    not_nucleus = valid & (purple <= t_high)
    t_green = _otsu(green[not_nucleus]) if not_nucleus.sum() > 16 else 255.0
    stained = ((green < t_green) | (purple > t_low)) & valid
    stained = cv2.morphologyEx(stained.astype(np.uint8), cv2.MORPH_OPEN, _disc(1.5 * unit))
    around = np.zeros_like(nucleus)
    cv2.circle(around, (round(cx), round(cy)), max(1, round(1.8 * hull_r)), 1, -1)
    cell = ((stained & around) | hull_mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cell, connectivity=8)
    cell = (labels == labels[min(sh - 1, round(cy)), min(sw - 1, round(cx))]).astype(np.uint8) | hull_mask
    cell = _fill_holes(cell)
    cell_d = float(np.clip(2 * np.sqrt(cell.sum() / np.pi), 2 * hull_r, 3.6 * hull_r))

    others = stained.astype(bool) & ~cv2.dilate(cell, _disc(2 * unit)).astype(bool) & (purple <= t_high)
    rbc = _red_cell_radii(others, valid)
    rbc = rbc[2 * rbc >= MIN_RBC_TO_CELL * cell_d]  # granules, platelets and slivers of cut cells are no ruler
    rbc_d = 2 * float(np.median(rbc)) if len(rbc) >= MIN_RBC else None
    return CellLocation(
        found=True,
        centre=(cx / scale, cy / scale),
        cell_diameter=cell_d / scale,
        rbc_diameter=None if rbc_d is None else rbc_d / scale,
        n_rbc=len(rbc),
        background=background_colour,
        nucleus_mask=nucleus,
        cell_mask=cell,
        analysis_scale=scale,
    )


def _background_colour(small: np.ndarray, valid: np.ndarray, purple: np.ndarray, t_low: float):
    bright = valid & (purple <= t_low)
    if bright.sum() < 16:
        return (255, 255, 255)
    grey = small[..., 1][bright]
    sel = bright.copy()
    sel[bright] = grey >= np.percentile(grey, 75)  # the brightest quarter of the unstained pixels
    return tuple(int(v) for v in np.median(small[sel], axis=0))


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the holes of a binary mask (the pale centre of a red cell, a vacuole)."""
    h, w = mask.shape
    flood = np.zeros((h + 2, w + 2), np.uint8)
    flood[1:-1, 1:-1] = mask
    inv = (1 - flood).astype(np.uint8)
    cv2.floodFill(inv, None, (0, 0), 0)
    return (mask | inv[1:-1, 1:-1]).astype(np.uint8)


def _red_cell_radii(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Radii of the red cells of a field: one per stained component, the inscribed radius of its convex hull
    (a red cell's pale centre often leaves an open ring, whose hull is the disc; two touching cells make a
    stadium whose inscribed radius is still one cell's). Components whose inscribed circle touches the image
    border or a padding band (cut cells) are left out, and so are small ones (platelets, fragments)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(0)
    to_edge = cv2.distanceTransform(np.pad(valid.astype(np.uint8), 1), cv2.DIST_L2, 5)[1:-1, 1:-1]
    radii = []
    for k in range(1, n):
        x, y, w, h, area = stats[k]
        if area < 12:
            continue
        roi = (labels[y : y + h, x : x + w] == k).astype(np.uint8)
        hull = cv2.convexHull(cv2.findNonZero(roi))
        filled = np.zeros((h + 2, w + 2), np.uint8)
        cv2.fillConvexPoly(filled, hull + 1, 1)
        dist = cv2.distanceTransform(filled, cv2.DIST_L2, 5)
        j = np.unravel_index(int(np.argmax(dist)), dist.shape)
        r = float(dist[j])
        if r < 3 or to_edge[y + j[0] - 1, x + j[1] - 1] <= r + 1:
            continue
        if filled.sum() / (np.pi * r * r) > 2.0:  # a long streak or a clump of three or more
            continue
        radii.append(r)
    radii = np.asarray(radii)
    if len(radii) >= 3:  # platelets and fragments are far smaller than the red cells of the same field
        radii = radii[radii >= 0.6 * np.median(radii)]
    return radii


def crop_square(image: np.ndarray, centre: tuple[float, float], side: float, fill: tuple[int, int, int]) -> np.ndarray:
    """The ``side`` x ``side`` square centred on ``centre``; parts outside the image (and padding bands) are
    filled with the slide's colour ``fill``."""
    side = max(8, int(round(side)))
    x0 = int(round(centre[0] - side / 2))
    y0 = int(round(centre[1] - side / 2))
    h, w = image.shape[:2]
    out = np.empty((side, side, 3), np.uint8)
    out[:] = fill
    xs, ys = max(0, x0), max(0, y0)
    xe, ye = min(w, x0 + side), min(h, y0 + side)
    if xe > xs and ye > ys:
        patch = image[ys:ye, xs:xe]
        pad = patch.max(axis=2) <= PADDING_LEVEL
        if pad.any():
            patch = patch.copy()
            patch[pad] = fill
        out[ys - y0 : ye - y0, xs - x0 : xe - x0] = patch
    return out


def measure_um_per_px(rbc_diameters: Sequence[float | None], min_cells: int = 5) -> float | None:
    """One pixel size for a source (one microscope, one camera): 7.5 um over the median of the per-image
    red-cell diameters, once the values under 0.6 of their median are left out (an image whose only
    measurable objects were fragments or cut cells: at a higher magnification a field holds few whole red
    cells). None when fewer than ``min_cells`` images had measurable red cells."""
    d = np.asarray([v for v in rbc_diameters if v], np.float64)
    if len(d) < min_cells:
        return None
    return RBC_DIAMETER_UM / float(np.median(d[d >= 0.6 * np.median(d)]))


def median_cell_um(locations: Sequence[CellLocation], um_per_px: float | None, min_cells: int = 5) -> float | None:
    """The median diameter of the located white cells in micrometres (the locator's own outline, so that a
    folder measured the same way compares with it); None without a pixel size or with fewer than ``min_cells``."""
    d = [loc.cell_diameter for loc in locations if loc.found]
    return float(np.median(d)) * um_per_px if um_per_px and len(d) >= min_cells else None


def class_cell_um(
    locations: Sequence[CellLocation | None],
    classes: Sequence[str],
    um_per_px: float | None,
    min_cells: int = 5,
) -> dict[str, float]:
    """Per class, the median diameter of the located white cells in micrometres (``classes[i]``: the class of
    ``locations[i]``); classes with fewer than ``min_cells`` located cells are left out. Comparing a folder's with
    the training cells', class by class, checks its pixel size without depending on its class mix."""
    by_class: dict[str, list[CellLocation]] = {}
    for loc, c in zip(locations, classes, strict=True):
        if loc is not None:
            by_class.setdefault(c, []).append(loc)
    sizes = {c: median_cell_um(locs, um_per_px, min_cells) for c, locs in by_class.items()}
    return {c: v for c, v in sizes.items() if v is not None}


@dataclass(frozen=True)
class Framing:
    """The framing step: ``method`` (centre, cell or scale) and the field's side in micrometres (``field_um``;
    for ``cell``, the side for a typical 12 um cell)."""

    method: str = "centre"
    field_um: float = DEFAULT_FIELD_UM

    def __post_init__(self):
        if self.method not in FRAMINGS:
            raise ValueError(f"data.framing must be one of {', '.join(FRAMINGS)}; got {self.method!r}")
        if self.field_um <= 0:
            raise ValueError(f"data.field_um must be positive, got {self.field_um}")

    @property
    def locates(self) -> bool:
        return self.method != "centre"

    def __call__(
        self, image: np.ndarray, um_per_px: float | None = None, location: CellLocation | None = None
    ) -> Framed:
        """Frame one RGB uint8 image. ``um_per_px``: the source's pixel size (scale framing; measured on this
        image's red cells when None); ``location``: a :func:`locate_cell` result already computed for it."""
        if self.method == "centre":
            return Framed(image, "centre")
        loc = location if location is not None else locate_cell(image)
        if self.method == "scale" and um_per_px is None and loc.rbc_diameter:
            um_per_px = RBC_DIAMETER_UM / loc.rbc_diameter
        if not loc.found:
            if self.method == "scale" and um_per_px:  # still the common scale, around the image's centre
                h, w = image.shape[:2]
                crop = crop_square(image, (w / 2, h / 2), self.field_um / um_per_px, loc.background)
                return Framed(crop, "scale", "no cell found: centred", um_per_px, loc)
            return Framed(image, "centre", "no cell found: centre framing", location=loc)
        if self.method == "scale":
            if um_per_px:
                crop = crop_square(image, loc.centre, self.field_um / um_per_px, loc.background)
                return Framed(crop, "scale", "", um_per_px, loc)
            note = "no red cell measurable: cell framing"
        else:
            note = ""
        side = loc.cell_diameter * self.field_um / TYPICAL_CELL_UM
        return Framed(crop_square(image, loc.centre, side, loc.background), "cell", note, None, loc)

    def token(self) -> str:
        return "centre" if self.method == "centre" else f"{self.method}-{self.field_um:g}um-v{LOCATOR_VERSION}"


def location_overlay(location: CellLocation) -> np.ndarray | None:
    """RGB picture of the located nucleus (magenta) and cell (green) at analysis scale, or None."""
    if location is None or location.nucleus_mask is None:
        return None
    out = np.zeros((*location.nucleus_mask.shape, 3), np.uint8)
    out[location.cell_mask > 0] = (40, 160, 40)
    out[location.nucleus_mask > 0] = (230, 0, 230)
    return out
