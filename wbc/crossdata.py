"""How a checkpoint holds up on other labs' images: evaluate it on several labelled folders, with and without
batch-norm adaptation and test-time augmentation; the table with bootstrap 95 % intervals and the figure are written
by :mod:`wbc.reports.crossdata`.

`python scripts/cross_dataset.py ckpt_path=... 'datasets={lisc: ../shared/data/lisc, mylab: /data/mylab}'`
Each folder is ``<class>/*`` (PBC's folder names map by default; ``class_map`` otherwise); each is taken as one
domain (one lab): its pixel size (scale framing) and, with adaptation, its batch-norm statistics are its own.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.calibration import expected_calibration_error
from wbc.metrics import macro, rates_from_confusion
from wbc.predict import (
    check_cell_sizes,
    evaluation_mapping,
    folder_labels,
    input_um_per_px,
    list_inputs,
)
from wbc.predictor import CheckpointError, Predictor, iterate_batches
from wbc.prior import PriorError, check_setting, resolve
from wbc.prior import adjust as adjust_prior

log = logging.getLogger(__name__)


def headline(y: np.ndarray, pred: np.ndarray, probs: np.ndarray | None, n_classes: int) -> dict[str, float]:
    """Accuracy, macro-F1 (over the classes present, as everywhere in wbc), per-class recall and ECE."""
    cm = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    rates = rates_from_confusion(torch.from_numpy(cm))
    out = {"accuracy": float((y == pred).mean()), "f1_macro": macro(rates["f1"])[0]}
    out |= {f"recall/{c}": float(v) for c, v in enumerate(rates["recall"].tolist())}
    if probs is not None:
        out["ece"] = expected_calibration_error(torch.from_numpy(probs), torch.from_numpy(y))
    return out


# Crops of one cell: a labelled set often holds several crops of the same cell (LISC: 1,287 crops of 281 cells,
# each cut a few pixels apart). Framed on the located cell, they become one picture: on 16 x 16 thumbnails
# of the classifier inputs, LISC's nearest neighbours sit under 3 grey levels (RMS) for 1,200 of its crops, while
# PBC's test images, each a different cell, never come nearer than 10 to another (most 15 to 25).
SAME_CELL_RMS = 6.0
MAX_GROUPED = 20_000  # beyond this many images the pairwise comparison is not worth its time: one cell per image
# A folder's classifier inputs are kept in memory, to serve every checkpoint and setting, up to this size; a larger
# folder is decoded and framed again for each (LISC at 64 px: 16 MB)
SHARED_BYTES = 2 * 2**30


def thumbnails(images: np.ndarray, side: int = 16) -> np.ndarray:
    """(N, S, S, 3) uint8 classifier inputs -> (N, side * side * 3) float32 area-averaged thumbnails."""
    import cv2

    return (
        np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in images])
        .reshape(len(images), -1)
        .astype(np.float32)
    )


def same_cell_groups(thumbs: np.ndarray, max_rms: float = SAME_CELL_RMS) -> np.ndarray:
    """A group id per image: images whose thumbnails differ by less than ``max_rms`` grey levels (root mean
    square), directly or through a chain of such images, are taken to be crops of one cell."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(thumbs) == 0:
        return np.zeros(0, np.int64)
    t = thumbs.astype(np.float64)
    sq = (t**2).sum(1)
    limit = max_rms**2 * t.shape[1]  # squared distance of an RMS difference of max_rms
    rows, cols = [], []
    for start in range(0, len(t), 1024):
        dist = sq[start : start + 1024, None] + sq[None, :] - 2 * t[start : start + 1024] @ t.T
        a, b = np.nonzero(dist < limit)
        rows.append(a + start)
        cols.append(b)
    n = len(t)
    pairs = coo_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    return connected_components(pairs, directed=False)[1]


def bootstrap(
    y: np.ndarray,
    probs: np.ndarray,
    n_classes: int,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile 95 % intervals of :func:`headline`'s values over images resampled with replacement; with
    ``groups`` (a group id per image: crops of one cell), whole groups are resampled (a cluster bootstrap), so
    that copies of one cell do not pass for independent evidence."""
    pred = probs.argmax(1)
    draws: dict[str, list[float]] = {}
    for i in resamples(len(y), n_boot, seed, groups):
        for k, v in headline(y[i], pred[i], probs[i], n_classes).items():
            draws.setdefault(k, []).append(v)
    return {k: tuple(float(q) for q in np.nanpercentile(v, [2.5, 97.5])) for k, v in draws.items()}


def resamples(n: int, n_boot: int, seed: int = 0, groups: np.ndarray | None = None) -> Iterator[np.ndarray]:
    """``n_boot`` bootstrap resamples of ``n`` images (index arrays): images drawn with replacement, or with
    ``groups`` (a group id per image) whole groups."""
    rng = np.random.default_rng(seed)
    if groups is None:
        for _ in range(n_boot):
            yield rng.integers(0, n, n)
        return
    # the images of each group: indices sorted by group, split where the group changes
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    for _ in range(n_boot):
        yield np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])


def prepared_folder(
    predictor: Predictor,
    folder: str | Path,
    cache: Path,
    name: str,
    class_map: Mapping | None = None,
    um_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A labelled folder's images as the classifier sees them, (N, S, S, 3) uint8, and their class indices
    (unlabelled files left out), cached in the folder ``cache`` under ``name`` and a key of everything that makes
    them (the folder, the class map, the checkpoint's preprocessing: checkpoints that frame differently get their
    own copy). The folder's own pixel size is measured (scale framing) and multiplied by ``um_scale``: a ruler
    that errs by that factor."""
    made_by = [str(Path(folder).resolve()), class_map, predictor.model.hparams.get("preprocessing"), um_scale]
    key = json.dumps(made_by, sort_keys=True, default=str)
    path = cache / f"{name}-{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
    if path.exists():
        z = np.load(path)
        return z["x"], z["y"]
    files, root = list_inputs(folder)
    labels = folder_labels(files, root, evaluation_mapping(predictor.class_names, class_map)).labels
    um = input_um_per_px(predictor, files, None, 1)
    um = um * um_scale if um else um
    xs, ys = [], []
    for idx, images, _, _ in iterate_batches(files, predictor.preprocessor, 64, 1, um_per_px=um):
        keep = [j for j, i in enumerate(idx) if labels[i] is not None]
        if keep:
            xs.append(images[keep])
            ys += [labels[idx[j]] for j in keep]
    x, y = np.concatenate(xs), np.array(ys)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y)
    return x, y


@dataclass
class Inputs:
    """A folder's files as one checkpoint's preprocessing makes them: ``indices`` of the files that decoded, their
    classifier inputs ``images`` ((n, S, S, 3) uint8) and ``errors`` ({index: problem}). Made once, they serve every
    setting and every checkpoint with the same preprocessing (:func:`preprocessing_key`)."""

    indices: list[int]
    images: np.ndarray
    errors: dict[int, str]

    @classmethod
    def load(
        cls, predictor: Predictor, files: list[Path], um_per_px: float | None, batch_size: int = 64, threads: int = 2
    ) -> Inputs:
        indices, images, errors = [], [], {}
        for idx, batch, problems, _ in iterate_batches(
            files, predictor.preprocessor, batch_size, threads, um_per_px=um_per_px
        ):
            errors.update(problems)
            if idx:
                indices += idx
                images.append(batch)
        side = predictor.preprocessor.image_size
        return cls(indices, np.concatenate(images) if images else np.zeros((0, side, side, 3), np.uint8), errors)

    def batches(self, size: int) -> Iterator[tuple[list[int], np.ndarray, dict[int, str]]]:
        """As :func:`~wbc.predictor.iterate_batches` yields them, less the review notes (errors: in ``errors``)."""
        for start in range(0, len(self.indices), size):
            yield self.indices[start : start + size], self.images[start : start + size], {}


def preprocessing_key(predictor: Predictor) -> str:
    """Equal for checkpoints whose preprocessing makes the same inputs from the same files: framing, enlarger,
    size, SR stage (its weights' digest), stain step and the recorded training cell sizes (the white-cell ruler)."""
    pre = predictor.preprocessor
    recorded = predictor.model.hparams.get("preprocessing", {})
    parts = [pre.framing.token(), pre.reference_token(), pre.cache_token(), recorded.get("train_cell_um")]
    return json.dumps(parts, default=str)


def evaluate_folder(
    predictor: Predictor,
    folder: str | Path,
    class_map: Mapping[str, str] | None = None,
    adapt_bn: bool = False,
    um_per_px: float | None = None,
    batch_size: int = 64,
    threads: int = 2,
    n_boot: int = 1000,
    tta: bool = False,
    same_cell: bool = True,
    adapt_layers: Any = "auto",
    check_sizes: bool = False,
    arrays: bool = False,
    inputs: Inputs | None = None,
    priors: Sequence[Any] = ("train",),
) -> list[dict[str, Any]]:
    """Metrics of ``predictor`` on one labelled folder (the predictor is left as it was); ``tta`` averages the
    eight flips/90-degree rotations of each image. With ``same_cell`` the intervals resample cells, crops of one
    cell (:func:`same_cell_groups`) together; ``cells`` in the result counts them. ``adapt_layers``: AdaBN's
    batch-norm layers (:meth:`~wbc.predictor.Predictor.adapt_layers`); ``check_sizes``: the cells' check of the
    pixel size (:func:`~wbc.predict.check_cell_sizes`) in ``cell_sizes``; ``arrays``: the evaluated files'
    indices, labels, probabilities and cell groups in ``arrays`` (for several checkpoints' summary). ``inputs``:
    the folder's files already preprocessed with ``um_per_px`` (:class:`Inputs`); without them each file is
    decoded and framed as it is predicted (and again for AdaBN). One result per class prior in ``priors``
    (:mod:`wbc.prior`: train, uniform, folder, auto, or proportions; ``prior`` and ``prior_mix`` in each), from
    one pass of the model; a prior the folder cannot take (folder: too few images) is left out, with a warning."""
    files, root = list_inputs(folder)
    names = predictor.class_names
    found = folder_labels(files, root, evaluation_mapping(names, class_map))
    if inputs is None:
        um_per_px = input_um_per_px(predictor, files, um_per_px, threads)

    def batches() -> Iterator[tuple[list[int], np.ndarray | None, dict[int, str]]]:
        if inputs is not None:
            return inputs.batches(batch_size)
        stream = iterate_batches(files, predictor.preprocessor, batch_size, threads, um_per_px=um_per_px)
        return ((idx, images, problems) for idx, images, problems, _ in stream)

    saved = copy.deepcopy(predictor.model.state_dict()) if adapt_bn else None
    thumbs = np.zeros((len(files), 16 * 16 * 3), np.float32)
    probs = torch.full((len(files), len(names)), float("nan"))
    errors = dict(inputs.errors) if inputs is not None else {}
    try:
        layers = predictor.adapt_layers(adapt_layers)
        adapted = (
            predictor.adapt_images((images for idx, images, _ in batches() if idx), layers=layers) if adapt_bn else 0
        )
        for idx, images, problems in batches():
            errors.update(problems)
            if idx:
                probs[idx] = predictor.probabilities(images, tta=tta)
                thumbs[idx] = thumbnails(images)
    finally:
        if saved is not None:
            predictor.model.load_state_dict(saved)
    keep = [i for i, label in enumerate(found.labels) if label is not None and i not in errors]
    y = np.array([found.labels[i] for i in keep], dtype=np.int64)
    common: dict[str, Any] = {
        "folder": str(folder),
        "adapt_bn": adapt_bn,
        "tta": tta,
        "images": len(keep),
        "adapted_on": adapted,
        "adapted_layers": layers if adapt_bn else None,
        "errors": len(errors),
        "unmapped_folders": found.unmapped,
        "um_per_px": um_per_px,
        "per_class_images": {names[c]: int((y == c).sum()) for c in range(len(names))},
    }
    groups = same_cell_groups(thumbs[keep]) if same_cell and len(keep) <= MAX_GROUPED else None
    if same_cell and groups is None:
        log.info("%s: over %d images; intervals resample images, not cells", folder, MAX_GROUPED)
    common["cells"] = len(np.unique(groups)) if groups is not None else len(keep)
    if check_sizes:
        common["cell_sizes"] = check_cell_sizes(predictor, files, probs, um_per_px, threads)
    results, done = [], set()
    for setting in priors:
        try:  # the mix is estimated on every predicted file of the folder, labelled or not
            adjusted, prior = adjust_prior(probs.numpy(), predictor.model.hparams, setting)
        except PriorError as err:
            log.warning("%s: %s; that row is left out", folder, err)
            continue
        if json.dumps(prior["prior"]) in done:  # auto that resolved to a setting already given
            continue
        done.add(json.dumps(prior["prior"]))
        p = adjusted[keep]
        result = common | {"prior": prior["prior"], "prior_mix": prior["mix"]}
        if len(keep):
            result["metrics"] = headline(y, p.argmax(1), p, len(names))
            result["ci95"] = bootstrap(y, p, len(names), n_boot, groups=groups)
        if arrays:
            result["arrays"] = {"files": np.array(keep, dtype=np.int64), "y": y, "probs": p, "groups": groups}
        results.append(result)
    return results


def seed_mean(
    y: np.ndarray,
    probs: np.ndarray,
    n_classes: int,
    n_boot: int = 1000,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> dict[str, Any]:
    """:func:`headline`'s values of several checkpoints of one recipe (``probs``: (K, N, C), K training seeds on
    the same N images) averaged over the checkpoints, with 95 % intervals for the recipe: what another training
    seed would score on another sample of such cells.

    Seeds and cells are crossed (every checkpoint sees the same cells), so the variance of the mean has a seed
    part and a cell part, estimated separately and added: the spread of the checkpoints' values over seeds
    divided by K (training noise, and each seed's own luck with these cells), and the cluster bootstrap variance
    of the seed mean over cells (``groups``: crops of one cell together; the sample of cells that every seed
    shares). Their sum counts the seed-by-cell interaction twice, so it errs wide, never narrow. The interval is
    Student-t with Satterthwaite's degrees of freedom (K - 1 when the seed part dominates), cut to [0, 1]."""
    from scipy import stats

    k = len(probs)
    per_seed = [headline(y, p.argmax(1), p, n_classes) for p in probs]
    draws: dict[str, list[float]] = {}
    for i in resamples(len(y), n_boot, seed, groups):
        values: dict[str, list[float]] = {}
        for p in probs:
            for key, v in headline(y[i], p[i].argmax(1), p[i], n_classes).items():
                values.setdefault(key, []).append(v)
        for key, v in values.items():
            draws.setdefault(key, []).append(float(np.mean(v)))  # NaN (a class absent from a resample) stays NaN
    mean, ci, sd = {}, {}, {}
    for key in per_seed[0]:
        v = np.array([m[key] for m in per_seed], dtype=float)
        if np.isnan(v).any():  # a class absent from the folder: no recall, for any seed
            mean[key], ci[key], sd[key] = math.nan, (math.nan, math.nan), math.nan
            continue
        mean[key] = float(v.mean())
        seed_var = float(v.var(ddof=1)) / k if k > 1 else 0.0
        cell_var = float(np.nanvar(draws[key], ddof=1))
        total = seed_var + cell_var
        df = total**2 * (k - 1) / seed_var**2 if seed_var > 0 else math.inf
        half = float(stats.t.ppf(0.975, df) if math.isfinite(df) else stats.norm.ppf(0.975)) * math.sqrt(total)
        ci[key] = (max(0.0, mean[key] - half), min(1.0, mean[key] + half))  # every value here is within [0, 1]
        sd[key] = float(v.std(ddof=1)) if k > 1 else math.nan
    return {"metrics": mean, "ci95": ci, "seed_sd": sd, "per_seed": per_seed}


def _settings(value: Any) -> list[bool]:
    """A config value that is one flag or a list of flags, as a list of bools."""
    from omegaconf import OmegaConf

    return [bool(v) for v in (list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value])]


def prior_settings(value: Any) -> list[Any]:
    """cross_dataset's ``prior``: one setting or a list of them; a list of numbers is one setting (proportions)."""
    from omegaconf import OmegaConf

    items = OmegaConf.to_object(value) if OmegaConf.is_config(value) else value
    if isinstance(items, list) and not all(isinstance(v, int | float) for v in items):
        return items
    return [items]


def checkpoint_labels(paths: list[str]) -> list[str]:
    """A short, distinct name per checkpoint for the report: its run folder's name (``<run>/checkpoints/x.ckpt``),
    else its file name, numbered where two would read alike."""
    names = []
    for path in map(Path, paths):
        names.append(path.parent.parent.name if path.parent.name == "checkpoints" else path.stem)
    if len(set(names)) < len(names):
        names = [f"{k + 1}:{n}" for k, n in enumerate(names)]
    return names


def summarise(rows: list[dict[str, Any]], n_classes: int, n_boot: int) -> list[dict[str, Any]]:
    """The rows of several checkpoints of one recipe on one folder and setting -> two rows: their mean with an
    interval over seeds and cells (:func:`seed_mean`) and their ensemble (the mean of their probabilities: one
    classifier, interval over cells). Only the files that every checkpoint evaluated count."""
    parts = [r["arrays"] for r in rows]
    common = parts[0]["files"]
    for a in parts[1:]:
        common = np.intersect1d(common, a["files"])
    if not len(common):
        return []
    take = [np.searchsorted(a["files"], common) for a in parts]
    y = parts[0]["y"][take[0]]
    probs = np.stack([a["probs"][t] for a, t in zip(parts, take, strict=True)])
    groups = parts[0]["groups"][take[0]] if parts[0]["groups"] is not None else None
    base = {k: rows[0][k] for k in ("name", "folder", "adapt_bn", "tta", "prior", "cells")} | {"images": len(common)}
    recipe = seed_mean(y, probs, n_classes, n_boot, groups=groups)
    mean_row = base | {"model": f"mean of {len(rows)}"} | {k: recipe[k] for k in ("metrics", "ci95", "seed_sd")}
    ensemble = probs.mean(0)
    ensemble_row = base | {
        "model": f"ensemble of {len(rows)}",
        "metrics": headline(y, ensemble.argmax(1), ensemble, n_classes),
        "ci95": bootstrap(y, ensemble, n_classes, n_boot, groups=groups),
    }
    return [mean_row, ensemble_row]


def run(cfg: Any) -> int:
    """The cross_dataset command; returns the exit code (2: bad checkpoint, folder or mapping)."""
    from omegaconf import OmegaConf

    from wbc.errors import UserError
    from wbc.reports.artefacts import write_json
    from wbc.reports.crossdata import write_report

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)  # now, not after the evaluation: a folder it cannot make fails at once
    given = cfg.ckpt_path
    paths = [str(p) for p in given] if OmegaConf.is_list(given) or isinstance(given, list) else [str(given)]
    try:
        predictors = [
            Predictor.from_checkpoint(p, cfg.device, trust=cfg.trust_checkpoint, enlarger=cfg.get("enlarger"))
            for p in paths
        ]
    except (CheckpointError, ValueError) as err:
        log.error("%s", err)
        return 2
    names = predictors[0].class_names
    if any(p.class_names != names for p in predictors):
        log.error("ckpt_path: the checkpoints classify into different classes: %s", [p.class_names for p in predictors])
        return 2
    labels = checkpoint_labels(paths) if len(paths) > 1 else [None]
    class_map = None if cfg.class_map is None else dict(cfg.class_map)
    settings = [(a, t) for a in _settings(cfg.adapt_bn) for t in _settings(cfg.tta)]
    priors = prior_settings(cfg.get("prior", "train"))
    try:
        for setting in priors:
            for predictor in predictors:
                check_setting(resolve(setting, predictor.model.hparams), len(names))
    except PriorError as err:
        log.error("%s", err)
        return 2
    results = []
    keys = [preprocessing_key(p) for p in predictors]
    for name, folder in dict(cfg.datasets).items():
        try:  # one pixel size per folder (one microscope) and preprocessing (its ruler), measured once
            files = list_inputs(folder)[0]
            ums = {}
            for key, predictor in zip(keys, predictors, strict=True):
                if key not in ums:
                    ums[key] = input_um_per_px(predictor, files, cfg.um_per_px, cfg.decode_threads)
        except (FileNotFoundError, ValueError) as err:
            log.error("%s: %s", name, err)
            return 2
        side = max(p.preprocessor.image_size for p in predictors)
        share = len(settings) * len(predictors) > 1 and len(files) * side * side * 3 <= SHARED_BYTES
        shared: dict[str, Inputs] = {}  # the files decoded and framed once per preprocessing, for every setting
        for adapt, tta in settings:
            by_prior: dict[str, list[dict[str, Any]]] = {}  # each prior's rows, one per checkpoint
            for predictor, label, key in zip(predictors, labels, keys, strict=True):
                if share and key not in shared:
                    shared[key] = Inputs.load(predictor, files, ums[key], cfg.batch_size, cfg.decode_threads)
                try:
                    rows = evaluate_folder(
                        predictor,
                        folder,
                        class_map,
                        bool(adapt),
                        ums[key],
                        cfg.batch_size,
                        cfg.decode_threads,
                        cfg.bootstrap,
                        tta,
                        cfg.same_cell,
                        cfg.adapt_bn_layers,
                        check_sizes=(adapt, tta) == settings[0],
                        arrays=len(paths) > 1,
                        inputs=shared.get(key),
                        priors=priors,
                    )
                except (UserError, FileNotFoundError, ValueError) as err:
                    log.error("%s: %s", name, err)
                    return 2
                for r in rows:
                    r["name"] = name
                    if label is not None:
                        r["model"] = label
                    m = r.get("metrics", {})
                    log.info(
                        "%s%s (adapt_bn=%s, tta=%s, prior=%s, %d images): accuracy %.4f, macro-F1 %.4f, ECE %s",
                        name,
                        f" [{label}]" if label else "",
                        adapt,
                        tta,
                        r["prior"],
                        r["images"],
                        m.get("accuracy", float("nan")),
                        m.get("f1_macro", float("nan")),
                        m.get("ece"),
                    )
                    by_prior.setdefault(json.dumps(r["prior"]), []).append(r)
            for rows in by_prior.values():
                if len(paths) > 1 and len(rows) == len(paths):  # every checkpoint took this prior
                    rows += summarise(rows, len(names), cfg.bootstrap)
                for r in rows:
                    r.pop("arrays", None)
                results += rows
    checkpoint = paths[0] if len(paths) == 1 else paths
    write_json(out / "cross_dataset.json", {"checkpoint": checkpoint, "results": results})
    what = paths[0] if len(paths) == 1 else f"{len(paths)} checkpoints"
    write_report(results, names, out, f"Cross-dataset evaluation of {what}")
    log.info("report: %s", out / "cross_dataset.md")
    return 0
