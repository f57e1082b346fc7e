"""Synthetic white blood cell images: a procedural stand-in for May-Grünwald-Giemsa smear crops.

This data is SYNTHETIC: each image is drawn by a small procedural model of cell morphology (nucleus lobes,
granules, chromatin, vacuoles, red blood cells, stain and optics). It exists so that training, tests and CI run
offline, and to study resolution effects: the classes are built to overlap in coarse features (size, colour) and
to differ mainly in fine detail (granule texture, thin inter-lobe strands, chromatin), which a reduced image
loses. It is not a substitute for real cells, and results on it say nothing about clinical performance.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import cv2
import numpy as np

from wbc.data.samples import Sample

# Bump whenever drawing code or parameters change: it is part of cache_token, so cached images are rebuilt.
GENERATOR_VERSION = 1

CLASS_NAMES = ("Neutrophil", "Lymphocyte", "Monocyte", "Eosinophil/Basophil")

# Geometry is in pixels of a 128 px image. Smaller outputs are drawn at 128 and area-reduced, so that a 64 px
# image is the 128 px one seen by a coarser camera rather than a differently drawn cell.
_BASE = 128
_SHIFT = 4  # cv2 fractional bits: sub-pixel positions keep small shapes from snapping to the grid
_ONE = 1 << _SHIFT


def _od(rgb: Sequence[float]) -> np.ndarray:
    """Optical density of a layer that shows colour ``rgb`` under white light (Beer-Lambert)."""
    return -np.log(np.asarray(rgb, np.float64) / 255.0)


# Romanowsky stains are two dyes: eosin (pink-orange, acidic) and azure / methylene blue (basic); azure bound
# to DNA turns purple. Each structure takes up each dye with its own affinity, and the per-slide balance of the
# two dyes (buffer pH, staining time) shifts every colour at once: the main reason colours overlap.
_EOSIN = _od((245, 160, 175))
_AZURE = _od((130, 180, 235))
_PURPLE = _od((95, 45, 145))
_ORANGE = _od((230, 120, 85))  # eosin as bound by eosinophil granules
_PLASMA = _od((242, 217, 203))  # the thin film that tints the smear's background peach; cells displace it

# dyes(eosin, azure, orange=0, purple=0) -> the OD vector of a structure under this image's stain.
Dyes = Callable[..., np.ndarray]


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _ONE)), int(round(y * _ONE))


def _poly(points: np.ndarray) -> list[np.ndarray]:
    return [np.round(points * _ONE).astype(np.int32)]


def _f32(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.float32) * np.float32(1 / 255)


def _ellipse(img: np.ndarray, c: tuple[float, float], ax: tuple[float, float], angle: float) -> None:
    axes = (max(1, int(round(ax[0] * _ONE))), max(1, int(round(ax[1] * _ONE))))
    cv2.ellipse(img, _pt(*c), axes, float(angle), 0, 360, 255, -1, cv2.LINE_AA, _SHIFT)


def _blob(
    img: np.ndarray, rng: np.random.Generator, c: tuple[float, float], r: float, ecc: float, rough: float
) -> None:
    """Fill an outline r(t) = r (1 + low harmonics): round-ish, never a perfect ellipse."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    rad = r * (1 + ecc * np.cos(2 * (t - rng.uniform(0, np.pi))))
    for k in (3, 4, 5):
        rad *= 1 + rough / k * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    cv2.fillPoly(img, _poly(np.stack([c[0] + rad * np.cos(t), c[1] + rad * np.sin(t)], 1)), 255, cv2.LINE_AA, _SHIFT)


@lru_cache(maxsize=4)
def _grid(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates in [-0.5, 0.5), for the illumination field; cached as they only depend on the size."""
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / np.float32(s) - np.float32(0.5)
    return yy, xx


def _noise(rng: np.random.Generator, s: int, cell: float) -> np.ndarray:
    """Smooth random field, spread about 1, with features about ``cell`` px (of 128) wide: chromatin, ground glass.

    The number of random draws does not depend on ``s``, so one seed gives the same cell at every size.
    """
    n = max(2, int(np.ceil(_BASE / cell)) + 1)
    return cv2.resize(rng.standard_normal((n, n), dtype=np.float32), (s, s), interpolation=cv2.INTER_CUBIC)


def _in_disc(rng: np.random.Generator, n: int, c: tuple[float, float], r: float) -> tuple[np.ndarray, np.ndarray]:
    rad, t = r * np.sqrt(rng.random(n)), rng.uniform(0, 2 * np.pi, n)
    return c[0] + rad * np.cos(t), c[1] + rad * np.sin(t)


def _granules(
    rng: np.random.Generator, s: int, c: tuple[float, float], r: float, n: int, sigma: float, amp: tuple[float, float]
) -> np.ndarray:
    """Density map of ``n`` Gaussian dots in a disc: hundreds of granules from one blur, not a drawing loop."""
    xs, ys = _in_disc(rng, n, c, r)
    a = rng.uniform(*amp, n)
    keep = (xs >= 0) & (xs < s) & (ys >= 0) & (ys < s)
    idx = ys[keep].astype(np.int64) * s + xs[keep].astype(np.int64)
    imp = np.bincount(idx, weights=a[keep], minlength=s * s).astype(np.float32).reshape(s, s)
    dots = cv2.GaussianBlur(imp, (0, 0), sigma) * np.float32(2 * np.pi * sigma * sigma)
    return np.tanh(dots)  # packed granules saturate instead of summing to black


class _Cell:
    """What a class's morphology function fills in; the common renderer turns it into an image."""

    def __init__(self, s: int, u: float, c: tuple[float, float]) -> None:
        self.s, self.u, self.c = s, u, c
        self.radius = 0.0
        self.nucleus = np.zeros((s, s), np.uint8)
        self.nuc_density = 1.0
        self.chromatin = (3.0, 0.25)  # texture feature size (px at 128) and strength
        self.cyto = (0.1, 0.1, 0.0)  # eosin, azure, orange affinity of the cytoplasm
        self.glass = 0.0  # strength of the monocyte's "ground glass" mottling
        self.vacuoles: list[tuple[float, float, float]] = []
        self.granules: list[tuple[np.ndarray, np.ndarray]] = []  # (density map, OD) over the cell

    def add_granules(
        self, rng: np.random.Generator, n: int, sigma: float, amp: tuple[float, float], od: np.ndarray
    ) -> None:
        dens = _granules(rng, self.s, self.c, self.radius * 0.93, n, sigma * self.u, amp)
        self.granules.append((dens, od))


def _lobed(rng: np.random.Generator, cell: _Cell, n: int, lobe_r: float, gap: float, reach: float) -> None:
    """``n`` lobes along a random arc, joined by thin chromatin strands: the segmented nucleus.

    ``gap`` is the strand length between lobes (negative: lobes overlap and hide it); the lobes stay within
    ``reach`` of the cell centre. The strands, about 1 px wide at 128 px, are the first cue a reduction loses.
    """
    img, u = cell.nucleus, cell.u
    length = (n - 1) * (2 * lobe_r + gap)
    rho = rng.uniform(0.8, 1.25) * max(lobe_r * 1.6, length / np.deg2rad(rng.uniform(110, 250)))
    t0, span = rng.uniform(0, 2 * np.pi), length / rho
    ts = t0 + np.linspace(-span / 2, span / 2, n) + rng.normal(0, 0.06, n)
    tt = np.linspace(ts[:-1], ts[1:], 6, axis=1)  # strand paths, (n - 1) x 6
    path = np.stack([rho * np.cos(tt), rho * np.sin(tt)], -1)
    # Centre the lobes on the cell, and squeeze the arc if it would reach past the cell's edge.
    path -= path.reshape(-1, 2).mean(0)
    extent = np.hypot(path[..., 0], path[..., 1]).max() + lobe_r
    path = path * min(1.0, reach / extent) + np.asarray(cell.c)
    tk = max(1, int(round(rng.uniform(0.9, 1.6) * u)))
    cv2.polylines(img, [np.round(p * _ONE).astype(np.int32) for p in path], False, 255, tk, cv2.LINE_AA, _SHIFT)
    centres = np.concatenate([path[:, 0], path[-1:, -1]])
    for k in range(n):
        r = lobe_r * rng.uniform(0.8, 1.15)
        ang = np.rad2deg(ts[k]) + rng.uniform(-30, 30)
        _ellipse(img, (centres[k, 0], centres[k, 1]), (r, r * rng.uniform(0.65, 0.95)), ang)


def _band(rng: np.random.Generator, cell: _Cell) -> None:
    """A band nucleus: one thick C or S shaped ribbon, curved like a lobed one but without constrictions."""
    c, big_r, u = cell.c, cell.radius, cell.u
    s = np.linspace(-0.5, 0.5, 24)
    if rng.random() < 0.6:  # C: an arc
        rho, span = big_r * rng.uniform(0.4, 0.55), np.deg2rad(rng.uniform(150, 260))
        x, y = rho * np.cos(s * span), rho * np.sin(s * span)
        x -= x.mean()
    else:  # S: a sine ribbon
        x, y = s * big_r * rng.uniform(1.1, 1.5), big_r * rng.uniform(0.2, 0.35) * np.sin(2 * np.pi * s)
    a = rng.uniform(0, 2 * np.pi)
    pts = np.stack([c[0] + x * np.cos(a) - y * np.sin(a), c[1] + x * np.sin(a) + y * np.cos(a)], 1)
    width = max(2, int(round(rng.uniform(7, 10) * u)))
    cv2.polylines(cell.nucleus, _poly(pts), False, 255, width, cv2.LINE_AA, _SHIFT)


def _tint(
    rng: np.random.Generator, eosin: float = 0.0, azure: float = 0.0, orange: float = 0.0
) -> tuple[float, float, float]:
    """Cytoplasm dye uptake, drawn from one range shared by all classes, so that a cell's overall colour says
    little about its class: a class only leans its mean a little, and its evidence is left to fine detail."""
    e, a, o = rng.uniform(0.05, 0.4) + eosin, rng.uniform(0.05, 0.4) + azure, rng.uniform(0.0, 0.25) + orange
    return max(e, 0.0), max(a, 0.0), max(o, 0.0)


def _neutrophil(rng: np.random.Generator, cell: _Cell, dyes: Dyes) -> None:
    u = cell.u
    cell.radius = rng.uniform(18, 25) * u
    if rng.random() < 0.15:
        _band(rng, cell)
    else:  # lobes about as big, in all, as a monocyte's nucleus: the count and the strands tell them apart
        n = int(rng.choice([2, 3, 4, 5], p=[0.25, 0.4, 0.25, 0.1]))
        lobe_r = rng.uniform(6.5, 8.5) * u * (1.0 if n < 4 else 0.85)
        _lobed(rng, cell, n, lobe_r, rng.uniform(-0.5, 3.0) * u, 0.8 * cell.radius)
    cell.nuc_density = rng.uniform(0.85, 1.15)
    cell.chromatin = (rng.uniform(2.5, 4.0), rng.uniform(0.2, 0.35))
    # Fine "neutral" granules: too small to resolve once reduced, they leave a pink-salmon tint about as
    # strong as an eosinophil's coarse granules leave, so that only their texture tells the two apart.
    cell.cyto = _tint(rng, eosin=0.05, orange=0.08)
    n_gr = int((cell.radius / u) ** 2 * rng.uniform(1.0, 1.6))
    cell.add_granules(rng, n_gr, 0.55, (0.15, 0.4), dyes(0.4, 0.15, orange=0.4, purple=0.15))


def _lymphocyte(rng: np.random.Generator, cell: _Cell, dyes: Dyes) -> None:
    u = cell.u
    if rng.random() < 0.55:  # small lymphocyte: the nucleus almost fills the cell
        cell.radius, frac = rng.uniform(15, 21) * u, rng.uniform(0.76, 0.9)
    else:  # large lymphocyte: more cytoplasm, as large as a small monocyte
        cell.radius, frac = rng.uniform(19, 25) * u, rng.uniform(0.6, 0.76)
    rn = cell.radius * frac
    off, t = (cell.radius - rn) * rng.uniform(0, 0.9), rng.uniform(0, 2 * np.pi)
    _blob(cell.nucleus, rng, (cell.c[0] + off * np.cos(t), cell.c[1] + off * np.sin(t)), rn, 0.06, 0.08)
    cell.nuc_density = rng.uniform(0.9, 1.2)
    cell.chromatin = (rng.uniform(2.5, 4.0), rng.uniform(0.25, 0.4))  # dense, clumped
    cell.cyto = _tint(rng, azure=0.08)  # leans sky blue


def _monocyte(rng: np.random.Generator, cell: _Cell, dyes: Dyes) -> None:
    u = cell.u
    cell.radius = rng.uniform(19, 27) * u
    rn = cell.radius * rng.uniform(0.6, 0.78)
    off, t = (cell.radius - rn) * rng.uniform(0, 0.6), rng.uniform(0, 2 * np.pi)
    cn = (cell.c[0] + off * np.cos(t), cell.c[1] + off * np.sin(t))
    # Kidney to horseshoe: a round outline with a notch in one side; the notch depth sets how far it folds.
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    d = np.angle(np.exp(1j * (ang - rng.uniform(0, 2 * np.pi))))
    notch = 1 - rng.uniform(0.3, 0.8) * np.exp(-((d / rng.uniform(0.35, 0.7)) ** 2))
    rad = rn * (1 + 0.12 * np.cos(2 * ang + rng.uniform(0, np.pi))) * notch
    pts = np.stack([cn[0] + rad * np.cos(ang), cn[1] + rad * np.sin(ang)], 1)
    cv2.fillPoly(cell.nucleus, _poly(pts), 255, cv2.LINE_AA, _SHIFT)
    if rng.random() < 0.4:  # folded: a pale crease across the nucleus
        a = rng.uniform(0, np.pi)
        dx, dy = 0.7 * rn * np.cos(a), 0.7 * rn * np.sin(a)
        p0, p1 = _pt(cn[0] - dx, cn[1] - dy), _pt(cn[0] + dx, cn[1] + dy)
        cv2.line(cell.nucleus, p0, p1, 130, max(1, round(u)), cv2.LINE_AA, _SHIFT)
    cell.nuc_density = rng.uniform(0.85, 1.1)
    cell.chromatin = (rng.uniform(1.5, 2.2), rng.uniform(0.35, 0.5))  # fine, lacy network
    cell.cyto = _tint(rng, azure=0.04)  # leans grey-blue
    cell.glass = rng.uniform(0.15, 0.3)
    if rng.random() < 0.5:
        xs, ys = _in_disc(rng, int(rng.integers(2, 9)), cell.c, cell.radius * 0.85)
        cell.vacuoles = [(x, y, rng.uniform(1.3, 3.2) * u) for x, y in zip(xs, ys, strict=True)]


def _eos_baso(rng: np.random.Generator, cell: _Cell, dyes: Dyes) -> None:
    u = cell.u
    if rng.random() < 0.7:  # eosinophil: bilobed nucleus, cytoplasm packed with coarse orange-red granules
        cell.radius = rng.uniform(18, 24) * u
        n = 2 if rng.random() < 0.85 else 3
        lobe_r, gap = rng.uniform(6.5, 8.0) * u, rng.uniform(0.5, 3.0) * u
        _lobed(rng, cell, n, lobe_r, gap, 0.85 * cell.radius)
        cell.nuc_density = rng.uniform(0.85, 1.15)
        cell.cyto = _tint(rng, azure=-0.1, orange=-0.12)  # the granules bring the orange
        n_gr = int((cell.radius / u) ** 2 * rng.uniform(0.25, 0.35))
        cell.add_granules(rng, n_gr, rng.uniform(1.0, 1.3), (0.3, 0.55), dyes(0.2, 0.05, orange=1.0))
    else:  # basophil: nucleus hidden under coarse dark granules scattered over the whole cell
        cell.radius = rng.uniform(16, 23) * u
        _blob(cell.nucleus, rng, cell.c, cell.radius * rng.uniform(0.55, 0.7), 0.1, 0.15)
        cell.nuc_density = rng.uniform(0.5, 0.8)
        cell.cyto = _tint(rng)
        n_gr = int((cell.radius / u) ** 2 * rng.uniform(0.15, 0.25))
        cell.add_granules(rng, n_gr, rng.uniform(1.1, 1.5), (0.5, 1.0), dyes(0.0, 0.3, purple=1.2))
    cell.chromatin = (rng.uniform(2.5, 4.0), rng.uniform(0.2, 0.35))


_MORPHOLOGY = (_neutrophil, _lymphocyte, _monocyte, _eos_baso)


def _draw(label: int, rng: np.random.Generator, s: int) -> np.ndarray:
    u = s / _BASE
    # Per-slide stain: dye balance, plus a near-identity mixing of the channels for camera / lamp colour.
    e_amt, a_amt = np.exp(rng.normal(0, 0.3, 2))
    mix = np.eye(3) + rng.normal(0, 0.03, (3, 3))

    def dyes(eosin: float, azure: float, orange: float = 0.0, purple: float = 0.0) -> np.ndarray:
        od = e_amt * (eosin * _EOSIN + orange * _ORANGE) + a_amt * (azure * _AZURE + purple * _PURPLE)
        return mix @ od

    c = (s / 2 + rng.normal(0, 2.5 * u), s / 2 + rng.normal(0, 2.5 * u))
    cell = _Cell(s, u, c)
    _MORPHOLOGY[label](rng, cell, dyes)
    layers: list[tuple[np.ndarray, np.ndarray]] = []  # (density map, OD vector), summed by one matmul

    # Red blood cells: pink discs with a pale centre, kept off the middle of the white cell but free to touch
    # or overlap its edge, as in a smear.
    rbc, pallor = np.zeros((s, s), np.uint8), np.zeros((s, s), np.uint8)
    for _ in range(int(rng.integers(6, 16))):
        r = rng.uniform(12, 15) * u
        x, y = rng.uniform(-r * 0.5, s + r * 0.5, 2)
        if np.hypot(x - c[0], y - c[1]) < cell.radius + r * 0.6:
            continue
        ell, a = rng.uniform(0.85, 1.0), rng.uniform(0, 180)
        _ellipse(rbc, (x, y), (r, r * ell), a)
        _ellipse(pallor, (x, y), (r * 0.55, r * 0.55 * ell), a)
    rbc_d = cv2.GaussianBlur(_f32(rbc), (0, 0), 0.6 * u)
    rbc_d -= 0.6 * cv2.GaussianBlur(_f32(pallor), (0, 0), 2.0 * u)  # a soft pale centre, a crisp rim
    layers.append((rbc_d, dyes(rng.uniform(0.5, 0.8), rng.uniform(0.1, 0.25))))
    plt = np.zeros((s, s), np.uint8)
    for _ in range(int(rng.poisson(0.6))):  # platelets: small purple specks in the background
        x, y = rng.uniform(0, s, 2)
        if np.hypot(x - c[0], y - c[1]) > cell.radius + 4 * u:
            _blob(plt, rng, (x, y), rng.uniform(1.5, 3.0) * u, 0.2, 0.3)
    layers.append((_f32(plt), dyes(0.2, 0.3, purple=0.5)))

    # The white cell displaces part of the plasma film; where it overlaps a red cell the two densities add.
    body = np.zeros((s, s), np.uint8)
    _blob(body, rng, c, cell.radius, rng.uniform(0.0, 0.1), 0.06)
    body = _f32(body)
    plasma = np.float32(rng.uniform(0.4, 1.5)) * (1 - 0.5 * body)
    layers.append((plasma, mix @ _PLASMA))
    cyto = body.copy()
    if cell.glass:
        cyto *= 1 + cell.glass * _noise(rng, s, 2.0)
    if cell.vacuoles:
        vac = np.zeros((s, s), np.uint8)
        for x, y, r in cell.vacuoles:
            cv2.circle(vac, _pt(x, y), int(round(r * _ONE)), 255, -1, cv2.LINE_AA, _SHIFT)
        cyto *= 1 - 0.85 * _f32(vac)
    layers.append((cyto, dyes(*cell.cyto)))
    nuc = cv2.GaussianBlur(_f32(cell.nucleus), (0, 0), 0.5 * u)
    size, strength = cell.chromatin
    nuc *= np.float32(cell.nuc_density) * (1 + strength * _noise(rng, s, size))
    layers.append((nuc, dyes(0.05, 0.2, purple=1.0)))
    layers += [(dens * body, od) for dens, od in cell.granules]

    dens = np.stack([d.reshape(-1) for d, _ in layers])
    od = np.stack([v for _, v in layers], 1).astype(np.float32)
    img = np.exp(-(od @ dens)).reshape(3, s, s)
    # Optics: uneven illumination (a tilt and vignetting), lamp colour, focus blur, sensor noise.
    yy, xx = _grid(s)
    tilt, a = rng.uniform(0, 0.16), rng.uniform(0, 2 * np.pi)
    gain = 1 + tilt * (xx * np.cos(a) + yy * np.sin(a)) - rng.uniform(0, 0.25) * (xx * xx + yy * yy)
    light = (255 * rng.uniform(0.93, 1.03) * (1 + rng.normal(0, 0.02, 3))).astype(np.float32)
    img = (img * gain).transpose(1, 2, 0) * light
    img = cv2.GaussianBlur(img, (0, 0), (0.3 + 1.6 * rng.beta(1.3, 2.5)) * u)  # mostly sharp, a few not
    img += (rng.random((s, s, 3), dtype=np.float32) - np.float32(0.5)) * np.float32(rng.uniform(3, 12))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_cell(label: int, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """HxWx3 uint8 RGB image of one cell of class ``label`` (index into CLASS_NAMES), ``size`` x ``size``."""
    if not 0 <= label < len(CLASS_NAMES):
        raise ValueError(f"label {label} is not in 0..{len(CLASS_NAMES) - 1}")
    work = max(size, _BASE)
    img = _draw(label, rng, work)
    return img if work == size else cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


class SyntheticSource:
    """Deterministic synthetic dataset: image i depends only on (seed, i), so images can be generated in any
    order / in parallel. Labels interleave (i % 4), so every prefix is balanced to within one image."""

    name = "synthetic"

    def __init__(
        self,
        n_per_class: int = 500,
        seed: int = 0,
        native_size: int = 128,
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> None:
        if len(class_names) != len(CLASS_NAMES):
            raise ValueError(f"the generator draws {len(CLASS_NAMES)} classes, got names {list(class_names)}")
        if n_per_class < 1 or native_size < 8:
            raise ValueError("n_per_class must be >= 1 and native_size >= 8")
        self.n_per_class, self.seed, self.native_size = int(n_per_class), int(seed), int(native_size)
        self.class_names = list(class_names)

    def scan(self) -> list[Sample]:
        n = len(self.class_names)
        return [
            Sample(
                path=f"synthetic://{self.seed}/{i}",
                label=i % n,
                key=f"synthetic:{self.seed}:{self.native_size}:{i}",
            )
            for i in range(self.n_per_class * n)
        ]

    def load(self, sample: Sample, min_size: int | None = None) -> np.ndarray:
        # min_size: the decode-size hint of file sources; images here are drawn at native_size
        prefix = f"synthetic://{self.seed}/"
        if not sample.path.startswith(prefix):
            raise ValueError(f"{sample.path!r} is not an image of this source ({prefix}...)")
        i = int(sample.path[len(prefix) :])
        return render_cell(sample.label, np.random.default_rng([self.seed, i]), self.native_size)

    def cache_token(self) -> str:
        return f"synthetic-v{GENERATOR_VERSION}-seed{self.seed}-n{self.n_per_class}-size{self.native_size}"
