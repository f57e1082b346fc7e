"""Label new images with a trained checkpoint: one CSV row per input file, always, with an error column.

The checkpoint alone is enough (:class:`~wbc.predictor.Predictor`, re-exported here with
:func:`~wbc.predictor.load_checkpoint` and :class:`~wbc.predictor.CheckpointError`). This module finds the input
files, their pixel size and, with ``evaluate=true``, their classes from their folders, and runs the command;
what it writes is :mod:`wbc.reports.predictions`.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.adapt import AdaptationError
from wbc.data.decode import DEFAULT_MAX_PIXELS, is_image_file, read_image
from wbc.data.framing import CellLocation, class_cell_um, locate_cell, measure_um_per_px, median_cell_um
from wbc.data.sources import SPLIT_DIRS, ClassMapping, pbc_class_map, walk_files
from wbc.errors import UserError
from wbc.predictor import CheckpointError, Predictor, iterate_batches, load_checkpoint  # noqa: F401  (re-exported)
from wbc.prior import PriorError, check_setting, require_images
from wbc.prior import adjust as adjust_prior
from wbc.prior import describe as describe_mix
from wbc.prior import resolve as resolve_prior
from wbc.reports.artefacts import json_safe
from wbc.reports.predictions import evaluate, review_reasons, summarise, write_predictions

log = logging.getLogger(__name__)


def list_inputs(spec: str | os.PathLike) -> tuple[list[Path], Path | None]:
    """Files named by ``spec`` (a file, a folder searched recursively, or a glob) and the folder they are under.

    Every file is listed, whatever its type, so that each one gets a row; symlink loops are not followed twice.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return walk_files(path), path
    if path.is_file() or path.is_symlink():
        return [path], None
    matches = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if not Path(p).is_dir())
    if matches:
        return matches, None
    raise FileNotFoundError(f"input not found: {spec} (not a file, a folder or a glob that matches files)")


def locate_files(
    paths: Sequence[Path], threads: int = 2, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> list[CellLocation | None]:
    """:func:`~wbc.data.framing.locate_cell` on each file, in threads; None for a file that cannot be read (its
    error row comes from prediction)."""

    def locate(path: Path) -> CellLocation | None:
        try:
            return locate_cell(read_image(path, max_pixels=max_pixels))
        except Exception:
            return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return list(pool.map(locate, paths))


def measure_folder_um_per_px(
    files: Sequence[Path],
    threads: int = 2,
    max_images: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    cell_um: float | None = None,
) -> tuple[float | None, str]:
    """The pixel size of a folder's images (one microscope and camera) and what measured it: the red cells of
    up to ``max_images`` of them spread over the folder; when too few red cells are measurable (tight crops)
    and ``cell_um`` is given, the white cells: their median diameter is taken to be ``cell_um``, the training
    cells' (which assumes a class mix not far from the training set's; it keeps a large cell larger than a small
    one, which framing each cell by its own size does not). (None, why) when neither measures it."""
    images = [f for f in files if is_image_file(f)]
    step = max(1, len(images) // max_images)
    located = [loc for loc in locate_files(images[::step][:max_images], threads, max_pixels) if loc is not None]
    um_per_px = measure_um_per_px([loc.rbc_diameter for loc in located])
    if um_per_px is not None:
        return um_per_px, "measured on the input's red cells"
    px = median_cell_um(located, 1.0)
    if cell_um and px:
        return (
            cell_um / px,
            f"too few red cells: the input's white cells, median diameter {px:.0f} px = {cell_um:.1f} um",
        )
    return None, "too few red cells measurable (and no white-cell ruler): each image framed by its own cell"


# A folder whose cells measure this much larger or smaller than the training cells of the same predicted classes
# gets a warning: a pixel size 10 % off costs 2 to 4 points of macro-F1 on PBC's own cells (scripts/scale_tta.py).
# On PBC's test split under the simulated lab differences with the right ruler the check read 0.98 to 1.02, except
# blur (1.09: a blurred outline is larger); with the ruler 10 % off, 0.91 and 1.10 (docs/lab_transfer.md)
SIZE_TOLERANCE = 0.05
SIZE_MIN_CELLS = 10  # located cells of a predicted class before its median counts
SIZE_MIN_CLASSES = 3  # classes that count before the check says anything


def check_cell_sizes(
    predictor: Predictor,
    files: Sequence[Path],
    probs: torch.Tensor,
    um_per_px: float | None,
    threads: int = 2,
    max_images: int = 256,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> dict[str, Any] | None:
    """Check the pixel size through the cells themselves: per predicted class, the median diameter of the white
    cells of up to ``max_images`` predicted files (in um, with ``um_per_px``) against the training cells' of that
    class (``train_class_cell_um``, recorded in the checkpoint). Class by class, so that the folder's class mix
    does not enter; ``ratio`` is the median over the classes of here / training, ``warn`` whether it is more than
    SIZE_TOLERANCE from 1. None without a pixel size, without the training sizes (checkpoints before they were
    recorded) or with fewer than SIZE_MIN_CLASSES classes of SIZE_MIN_CELLS located cells."""
    train = predictor.model.hparams.get("preprocessing", {}).get("train_class_cell_um")
    if not train or not um_per_px:
        return None
    predicted = [i for i in range(len(files)) if not torch.isnan(probs[i]).any()]
    sample = predicted[:: max(1, len(predicted) // max_images)][:max_images]
    located = locate_files([files[i] for i in sample], threads, max_pixels)
    classes = [predictor.class_names[int(probs[i].argmax())] for i in sample]
    here = class_cell_um(located, classes, um_per_px, SIZE_MIN_CELLS)
    per_class = {
        c: {"here_um": here[c], "training_um": train[c], "ratio": here[c] / train[c], "cells": classes.count(c)}
        for c in predictor.class_names
        if c in here and c in train
    }
    if len(per_class) < SIZE_MIN_CLASSES:
        return None
    ratio = float(np.median([v["ratio"] for v in per_class.values()]))
    return {"ratio": ratio, "warn": abs(ratio - 1) > SIZE_TOLERANCE, "per_class": per_class}


def input_um_per_px(
    predictor: Predictor,
    files: Sequence[Path],
    given: float | None = None,
    threads: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> float | None:
    """The pixel size scale framing uses for ``files``: ``given`` when set, else measured on their red cells
    (one microscope per call), else on their white cells against the checkpoint's ``train_cell_um``; None for
    other framings, or when neither measures it (then each image is measured alone, or falls back to cell
    framing)."""
    if given is not None or predictor.preprocessor.framing.method != "scale":
        return given
    cell_um = predictor.model.hparams.get("preprocessing", {}).get("train_cell_um")
    um_per_px, how = measure_folder_um_per_px(files, threads, max_pixels=max_pixels, cell_um=cell_um)
    log.info("scale framing: %s um per pixel, %s", um_per_px and f"{um_per_px:.4f}", how)
    return um_per_px


def predict_files(
    predictor: Predictor,
    files: Sequence[Path],
    batch_size: int = 64,
    threads: int = 2,
    tta: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    on_batch: Callable[[list[int], np.ndarray, torch.Tensor], None] | None = None,
    um_per_px: float | None = None,
) -> tuple[torch.Tensor, dict[int, str], dict[int, list[str]]]:
    """Probabilities (N, C; NaN rows for files that failed), {index: error} and {index: review notes from the
    input (no cell found, low resolution, grey-scale)} for every file.

    Scale framing uses :func:`input_um_per_px` (``um_per_px`` when given)."""
    probs = torch.full((len(files), len(predictor.class_names)), float("nan"))
    errors: dict[int, str] = {}
    notes: dict[int, list[str]] = {}
    um_per_px = input_um_per_px(predictor, files, um_per_px, threads, max_pixels)
    for indices, images, batch_errors, batch_notes in iterate_batches(
        files, predictor.preprocessor, batch_size, threads, max_pixels, um_per_px
    ):
        errors.update(batch_errors)
        notes.update(batch_notes)
        if indices:
            p = predictor.probabilities(images, tta=tta)
            probs[indices] = p
            if on_batch is not None:
                on_batch(indices, images, p)
    return probs, errors, notes


def evaluation_mapping(class_names: Sequence[str], class_map: Mapping[str, str] | None) -> ClassMapping:
    """The folder -> class mapping of ``evaluate=true``: ``class_map`` when given; else folders named like the
    classes, and PBC's folder names (:func:`~wbc.data.sources.pbc_class_map`, the mapping ``data=pbc`` trains
    with; LISC uses the same names) for the classes the checkpoint has (any case; plurals as the singular)."""
    if class_map is not None:
        return ClassMapping(class_names, dict(class_map), key="class_map")
    mapping = {name.lower(): name for name in class_names}
    for folder, name in pbc_class_map().items():
        if name in class_names:
            mapping.setdefault(folder.lower(), name)
    default = ClassMapping(class_names, mapping, key="class_map")
    default.given = False  # to change it, a user gives a whole class_map
    return default


@dataclass
class FolderLabels:
    """The class of each input file from its class folder (the first folder below the input folder, or the second
    below split folders: <folder>/{train,val,test}/<class>/...), and what was left out."""

    labels: list[int | None]  # class index per file; None: not in a class folder the mapping knows
    folders: dict[str, str]  # class folder -> class, for the folders that map
    images: dict[str, int]  # image files per class folder ("" for files in no class folder)
    unmapped: dict[str, int]  # folders the mapping does not know -> their image files
    mapping: ClassMapping
    splits: list[str] | None = None  # the split folders the class folders sit in, when they do


def folder_labels(files: Sequence[Path], root: Path | None, mapping: ClassMapping) -> FolderLabels:
    """Label every file by its first folder below ``root``; a UserError when no folder maps onto a class."""
    if root is None:
        raise UserError(
            "evaluate=true needs a folder of class folders as input (input=<folder> with <folder>/<class>/...), "
            "not a single file or a glob"
        )
    paths = []
    for f in files:
        try:
            paths.append(f.relative_to(root).parts)
        except ValueError:
            paths.append(())
    # a labelled set shipped as <folder>/{train,val,test}/<class>/... (as training reads it): the class folders sit
    # one level down; every split is evaluated (give input=<folder>/test for the test split alone)
    top = {parts[0] for parts in paths if len(parts) > 1}
    split_layout = bool(top) and all(s.lower() in SPLIT_DIRS and mapping.index(s) is None for s in top)
    depth = 1 if split_layout else 0
    labels: list[int | None] = []
    images: Counter[str] = Counter()
    for f, parts in zip(files, paths, strict=True):
        folder = parts[depth] if len(parts) > depth + 1 else ""
        labels.append(mapping.index(folder) if folder else None)
        if is_image_file(f):
            images[folder] += 1
    seen = sorted(f for f in images if f)
    folders = {f: mapping.class_names[i] for f in seen if (i := mapping.index(f)) is not None}
    if not folders:
        if not seen:
            where = f"directly in its split folders ({', '.join(sorted(top))})" if split_layout else "directly in it"
            raise UserError(
                f"evaluate=true: {root} holds no class folders (the images sit {where}): evaluation needs "
                f"<folder>/<class>/... or <folder>/{{train,val,test}}/<class>/... (class_map maps folder names onto "
                f"the classes {mapping.class_names})"
            )
        raise UserError(
            f"evaluate=true: none of the folders of {root} ({', '.join(seen)}) maps onto the classes "
            f"{mapping.class_names}: set class_map, e.g. {mapping.hint(seen)} (folders left out are predicted, "
            f"not evaluated)"
        )
    unmapped = {f: images[f] for f in seen if f not in folders}
    return FolderLabels(labels, folders, dict(images), unmapped, mapping, sorted(top) if split_layout else None)


def report_folders(found: FolderLabels, root: Path) -> None:
    """Say which folders are evaluated as which class, and loudly which are not."""
    if found.splits:
        log.info("evaluate: class folders inside the split folders %s, evaluated together", ", ".join(found.splits))
    log.info(
        "evaluate: %s",
        ", ".join(f"{f}/ -> {c} ({found.images[f]} images)" for f, c in found.folders.items()),
    )
    for folder, count in found.unmapped.items():
        log.warning(
            "evaluate: folder %s/ (%d images) is not in the class mapping: its images are predicted, NOT evaluated",
            folder,
            count,
        )
    if found.images.get(""):
        log.warning(
            "evaluate: %d images in %s in no class folder are predicted, NOT evaluated",
            found.images[""],
            root,
        )
    if found.unmapped:
        folders = list(found.unmapped) if found.mapping.given else [*found.folders, *found.unmapped]
        log.warning("evaluate: to evaluate them, map them onto classes: %s", found.mapping.hint(sorted(folders)))


def run(cfg: Any) -> int:
    """The predict command: returns the process exit code (0 when at least one file was predicted)."""
    from wbc.explain import GradCAM, save_gradcam, save_overlay

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        predictor = Predictor.from_checkpoint(
            cfg.ckpt_path, cfg.device, trust=cfg.trust_checkpoint, enlarger=cfg.get("enlarger")
        )
        files, root = list_inputs(cfg.input)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        log.error("%s", err)
        return 2
    if not files:
        log.error("no files found in %s", cfg.input)
        return 2
    tta = cfg.get("tta", "auto")
    if tta == "auto":  # as the checkpoint's recipe was tested (its training config's tta)
        tta = bool(predictor.model.hparams.get("tta", False))
        log.info(
            "tta=auto: %s, as the checkpoint's recipe predicts", "on (the 8 flips/rotations averaged)" if tta else "off"
        )
    elif not isinstance(tta, bool):
        log.error("tta=%s: use true, false or auto (as the checkpoint's recipe)", tta)
        return 2
    names = predictor.class_names
    prior_setting = resolve_prior(cfg.get("prior", "auto"), predictor.model.hparams)
    try:  # a prior it cannot use stops here, before predicting: an unknown one, or folder on too few files
        check_setting(prior_setting, len(names))
        if cfg.get("prior") == "folder":
            require_images(len(files), len(names))
    except PriorError as err:
        log.error("%s", err)
        return 2
    found = None
    if cfg.evaluate:  # before predicting: a mapping that maps nothing stops here, at once
        try:
            found = folder_labels(files, root, evaluation_mapping(names, cfg.class_map))
        except UserError as err:
            log.error("%s", err)
            return 2
        report_folders(found, root)
    cam = GradCAM(predictor.model, cfg.get("gradcam_method", "gradcam")) if cfg.gradcam else None

    final: dict[str, torch.Tensor] = {}  # the probabilities under the class prior, once they are known

    def visualise(indices: list[int], images: np.ndarray, p: torch.Tensor) -> None:
        p = final["probs"][indices] if final else p
        heat = cam(images) if cam is not None else None
        for j, i in enumerate(indices):
            rel = _relative(files[i], root, i)
            k = int(p[j].argmax())
            if cfg.save_overlays:
                save_overlay(images[j], f"{names[k]} {float(p[j, k]):.2f}", out / "overlays" / rel)
            if heat is not None:
                save_gradcam(images[j], heat[j], f"{names[k]}", out / "gradcam" / rel)

    on_batch = visualise if (cfg.save_overlays or cfg.gradcam) else None
    um_per_px = input_um_per_px(predictor, files, cfg.get("um_per_px"), cfg.decode_threads, cfg.max_pixels)
    adapted = None
    if cfg.get("adapt_bn"):
        try:
            layers = predictor.adapt_layers(cfg.get("adapt_bn_layers", "auto"))
            adapted = predictor.adapt(
                files, cfg.batch_size, cfg.decode_threads, cfg.max_pixels, um_per_px, cfg.adapt_min_images, layers
            )
        except AdaptationError as err:
            log.error("%s", err)
            return 2
        log.info(
            "adapt_bn: batch-norm statistics of %s re-estimated on %d images of the input",
            "the layers " + ", ".join(layers) if layers else "every layer",
            adapted,
        )
    # images are drawn (overlays, Grad-CAM) as they are predicted, unless a class prior moves the predictions after:
    # then in a second pass, with the final probabilities
    drawn_now = on_batch if prior_setting == "train" else None
    probs, errors, notes = predict_files(
        predictor, files, cfg.batch_size, cfg.decode_threads, tta, cfg.max_pixels, drawn_now, um_per_px
    )
    try:
        adjusted, prior = adjust_prior(probs.numpy(), predictor.model.hparams, cfg.get("prior", "auto"))
    except PriorError as err:
        log.error("%s", err)
        return 2
    probs = torch.from_numpy(adjusted).float()
    if on_batch is not None and drawn_now is None:
        final["probs"] = probs
        predict_files(predictor, files, cfg.batch_size, cfg.decode_threads, tta, cfg.max_pixels, on_batch, um_per_px)
    if prior["prior"] != "train":
        log.info(
            "prior=%s: probabilities moved to the class mix %s (training: %s)",
            prior["prior"],
            describe_mix(prior["mix"], names),
            describe_mix(prior["training_mix"], names),
        )
    sizes = check_cell_sizes(predictor, files, probs, um_per_px, cfg.decode_threads, max_pixels=cfg.max_pixels)
    if sizes is not None:
        detail = ", ".join(f"{c} {v['ratio'] - 1:+.0%}" for c, v in sizes["per_class"].items())
        if sizes["warn"]:
            log.warning(
                "the white cells here measure %+.0f %% against the training cells of the same predicted classes "
                "(%s): the pixel size (%.4f um) may be off (or the outlines differ: blur makes cells look larger), and "
                "cell size is a cue between lymphocytes and monocytes. If the microscope's calibration is known, "
                "give it: um_per_px=<um per pixel>",
                100 * (sizes["ratio"] - 1),
                detail,
                um_per_px,
            )
        else:
            log.info("cell sizes against the training cells of the same predicted classes: %s", detail)
    review = review_reasons(probs, errors, notes, cfg.review_confidence)
    labels = found.labels if found is not None else None
    write_predictions(out / "predictions.csv", files, names, probs, labels, errors, review)
    summary = summarise(files, names, probs, errors)
    summary |= {"review": len(review), "adapt_bn_images": adapted, "tta": tta, "um_per_px": um_per_px, **prior}
    summary["cell_sizes"] = sizes
    if found is not None:
        summary["evaluation"] = evaluate(out, names, probs, errors, found)
    (out / "summary.json").write_text(json.dumps(json_safe(summary), indent=2, ensure_ascii=False))
    log.info(
        "predicted %d of %d files (%d errors): %s",
        summary["predicted"],
        summary["files"],
        summary["errors"],
        ", ".join(f"{c}={n}" for c, n in summary["per_class"].items()),
    )
    for path, why in summary["error_files"].items():
        log.warning("%s: %s", path, why)
    if review:
        log.warning("%d prediction(s) flagged for review (column 'review' of predictions.csv)", len(review))
    log.info("written: %s", out / "predictions.csv")
    if summary["predicted"] == 0:
        log.error("no file could be predicted (%d errors; see %s)", len(errors), out / "predictions.csv")
        return 1
    if found is not None:
        return report_evaluation(summary["evaluation"], out)
    return 0


def report_evaluation(evaluation: dict[str, Any], out: Path) -> int:
    """The console summary of an evaluation: labelled and unlabelled counts, what was left out; the exit code."""
    labelled, unlabelled = evaluation["labelled"], evaluation["unlabelled"]
    if not labelled:
        log.error("evaluate: no file of the class folders could be predicted: nothing evaluated")
        return 1
    log.info(
        "evaluated %d labelled files (%d unlabelled, not evaluated): accuracy %.4f, macro-F1 %.4f over %d classes; "
        "written: %s",
        labelled,
        unlabelled,
        evaluation["accuracy"],
        evaluation["f1_macro"],
        evaluation["f1_macro_n_classes"],
        out / "metrics.json",
    )
    if unlabelled:
        where = [f"{f}/={n}" for f, n in evaluation["unmapped_folders"].items()]
        if evaluation["outside_class_folders"]:
            where.append(f"in no class folder={evaluation['outside_class_folders']}")
        log.warning(
            "evaluate: %d of %d predicted files NOT evaluated (not in a class folder the mapping knows): %s",
            unlabelled,
            labelled + unlabelled,
            ", ".join(where),
        )
    if evaluation["absent_classes"]:
        log.warning(
            "evaluate: no image of %s in the evaluated folders: no per-class values for them, and the macro "
            "values average the other classes",
            ", ".join(evaluation["absent_classes"]),
        )
    return 0


def _relative(path: Path, root: Path | None, index: int) -> Path:
    """Where a file's overlay goes: its place below the input folder, else a numbered name (no collisions)."""
    try:
        return path.relative_to(root).with_suffix(".png")
    except (TypeError, ValueError):
        return Path(f"{index:06d}_{path.stem}.png")
