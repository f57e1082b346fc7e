"""Label new images with a trained checkpoint: one CSV row per input file, always, with an error column.

The checkpoint alone is enough: it holds the class names, the deterministic preprocessing (size, lr_scale, SR
method) and the SR weights, and prediction runs the same :class:`~wbc.data.pipeline.Preprocessor` that made
the training, validation and test images.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import os
import pickle
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.adapt import MIN_IMAGES, AdaptationError, adapt_batchnorm
from wbc.artefacts import _json_safe
from wbc.data.decode import DEFAULT_MAX_PIXELS, ImageReadError, is_image_file, read_image
from wbc.data.framing import locate_cell, measure_um_per_px
from wbc.data.pipeline import Preprocessor
from wbc.data.sources import ClassMapping, pbc_class_map, walk_files
from wbc.errors import UserError
from wbc.models.module import CHECKPOINT_FORMAT, WBCClassifier
from wbc.sr.stage import SuperResolver

log = logging.getLogger(__name__)


class CheckpointError(Exception):
    """A checkpoint that cannot be used for prediction; the message says why and what to do."""


def load_checkpoint(path: str | os.PathLike, trust: bool = False) -> dict[str, Any]:
    """Read and validate a wbc classifier checkpoint, with ``weights_only`` unless ``trust`` is set."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours, or cut short
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or a truncated one (not a zip archive)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                f"{path}: holds Python objects that a safe (weights_only) load refuses. Load it only if you "
                f"trust its source: add trust_checkpoint=true"
            ) from err
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({err})") from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint, or a truncated one ({err})") from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    hparams = ckpt.get("hyper_parameters") or {}
    if "class_names" not in hparams or "net" not in hparams:
        raise CheckpointError(f"{path}: not a wbc classifier checkpoint (no class names or network in it)")
    version = ckpt.get("wbc_format")
    if version is None or "preprocessing" not in hparams or not hparams["preprocessing"]:
        raise CheckpointError(
            f"{path}: made by an older wbc that did not store its preprocessing; retrain with this version"
        )
    if version > CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: made by a newer wbc (format {version} > {CHECKPOINT_FORMAT}); upgrade wbc")
    return ckpt


class Predictor:
    """A classifier and the preprocessing it was trained with, rebuilt from a checkpoint alone."""

    def __init__(self, model: WBCClassifier, preprocessor: Preprocessor, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.preprocessor = preprocessor
        self.class_names: list[str] = list(model.class_names)
        self.device = device

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str = "auto", trust: bool = False) -> Predictor:
        device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        ckpt = load_checkpoint(path, trust)
        hparams = dict(ckpt["hyper_parameters"])
        model = WBCClassifier(**hparams)
        ckpt["state_dict"].setdefault("temperature", torch.ones(()))  # made before temperature scaling
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as err:
            raise CheckpointError(f"{path}: its weights do not fit the network it describes ({err})") from err
        pre = hparams["preprocessing"]
        sr_state = ckpt.get("sr_stage") or {**pre["sr"], "scale": pre["lr_scale"]}
        restorer = SuperResolver.from_state(sr_state, device=device)
        if pre["lr_scale"] > 1 and not restorer.ready:
            raise CheckpointError(f"{path}: sr={restorer.method} needs SR weights, which the checkpoint lacks")
        return cls(model, Preprocessor.from_description(pre, restorer), device)

    @torch.no_grad()
    def probabilities(self, images: np.ndarray, tta: bool = False) -> torch.Tensor:
        """(N, S, S, 3) uint8 images from the preprocessor -> (N, C) class probabilities.

        ``tta`` averages the eight flips/90-degree rotations of each image.
        """
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
        views = [x] if not tta else [v for k in range(4) for v in (x.rot90(k, (2, 3)), x.rot90(k, (2, 3)).flip(3))]
        return torch.stack([self.model(v).float().softmax(1) for v in views]).mean(0).cpu()

    def adapt(
        self,
        files: Sequence[Path],
        batch_size: int = 64,
        threads: int = 2,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        um_per_px: float | None = None,
        min_images: int = MIN_IMAGES,
    ) -> int:
        """AdaBN (:mod:`wbc.adapt`): re-estimate the network's batch-norm statistics on ``files`` (one lab's
        images, preprocessed as for prediction); returns the number of images used, or raises AdaptationError."""
        batches = (
            torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(self.device)
            for _, images, _, _ in iterate_batches(files, self.preprocessor, batch_size, threads, max_pixels, um_per_px)
            if images is not None
        )
        return adapt_batchnorm(self.model, batches, min_images)


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


def _load(
    path: Path, preprocessor: Preprocessor, max_pixels: int | None, um_per_px: float | None = None
) -> tuple[np.ndarray, list[str]] | str:
    """The S x S reference of one file and its review notes, or the problem that stopped it (never raises)."""
    if not is_image_file(path):
        return f"not an image file type ({path.suffix or 'no extension'}); skipped"
    try:
        image = read_image(path, max_pixels=max_pixels, min_size=preprocessor.decode_min_size)
        return preprocessor.prepare(image, um_per_px)
    except ImageReadError as err:
        return err.problem
    except Exception as err:  # one bad file never stops a folder
        return f"{type(err).__name__}: {err}"


def iterate_batches(
    files: Sequence[Path],
    preprocessor: Preprocessor,
    batch_size: int,
    threads: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    um_per_px: float | None = None,
) -> Iterator[tuple[list[int], np.ndarray, dict[int, str], dict[int, list[str]]]]:
    """Yield (indices, (n, S, S, 3) classifier inputs, {index: error}, {index: review notes}) per batch; decoding
    runs ahead in threads."""
    with ThreadPoolExecutor(max(1, threads)) as pool:
        pending: list[Future] = []
        ahead = 2 * batch_size  # decode at most two batches ahead: bounded memory on huge folders
        submitted = 0
        for start in range(0, len(files), batch_size):
            stop = min(start + batch_size, len(files))
            while submitted < min(len(files), stop + ahead):
                pending.append(pool.submit(_load, files[submitted], preprocessor, max_pixels, um_per_px))
                submitted += 1
            results = [pending[i].result() for i in range(start, stop)]
            for i in range(start, stop):
                pending[i] = None  # free decoded images as soon as they are consumed
            good = [(start + j, r) for j, r in enumerate(results) if not isinstance(r, str)]
            errors = {start + j: r for j, r in enumerate(results) if isinstance(r, str)}
            notes = {i: r[1] for i, r in good if r[1]}
            references = np.stack([r[0] for _, r in good]) if good else None
            images = preprocessor.restore(preprocessor.normalise(references)) if good else None
            yield [i for i, _ in good], images, errors, notes


def measure_folder_um_per_px(
    files: Sequence[Path], threads: int = 2, max_images: int = 256, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> float | None:
    """The pixel size of a folder's images (one microscope and camera), from the red cells of up to
    ``max_images`` of them spread over the folder; None when too few red cells are measurable."""
    images = [f for f in files if is_image_file(f)]
    step = max(1, len(images) // max_images)

    def rbc(path: Path) -> float | None:
        try:
            return locate_cell(read_image(path, max_pixels=max_pixels)).rbc_diameter
        except Exception:  # unreadable files get their error row later
            return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return measure_um_per_px(list(pool.map(rbc, images[::step][:max_images])))


def input_um_per_px(
    predictor: Predictor,
    files: Sequence[Path],
    given: float | None = None,
    threads: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> float | None:
    """The pixel size scale framing uses for ``files``: ``given`` when set, else measured on their red cells
    (one microscope per call); None for other framings, or when too few red cells are measurable (then each
    image is measured alone, or falls back to cell framing)."""
    if given is not None or predictor.preprocessor.framing.method != "scale":
        return given
    um_per_px = measure_folder_um_per_px(files, threads, max_pixels=max_pixels)
    log.info("scale framing: %s um per pixel, measured on the input's red cells", um_per_px and f"{um_per_px:.4f}")
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
    with; LISC uses the same names) for the classes the checkpoint has."""
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
    """The class of each input file from its first folder below the input folder, and what was left out."""

    labels: list[int | None]  # class index per file; None: not in a class folder the mapping knows
    folders: dict[str, str]  # class folder -> class, for the folders that map
    images: dict[str, int]  # image files per first-level folder ("" for files directly in the input folder)
    unmapped: dict[str, int]  # folders the mapping does not know -> their image files
    mapping: ClassMapping


def folder_labels(files: Sequence[Path], root: Path | None, mapping: ClassMapping) -> FolderLabels:
    """Label every file by its first folder below ``root``; a UserError when no folder maps onto a class."""
    if root is None:
        raise UserError(
            "evaluate=true needs a folder of class folders as input (input=<folder> with <folder>/<class>/...), "
            "not a single file or a glob"
        )
    labels: list[int | None] = []
    images: Counter[str] = Counter()
    for f in files:
        try:
            parts = f.relative_to(root).parts
        except ValueError:
            parts = ()
        folder = parts[0] if len(parts) > 1 else ""
        labels.append(mapping.index(folder) if folder else None)
        if is_image_file(f):
            images[folder] += 1
    seen = sorted(f for f in images if f)
    folders = {f: mapping.class_names[i] for f in seen if (i := mapping.index(f)) is not None}
    if not folders:
        if not seen:
            raise UserError(
                f"evaluate=true: {root} holds no class folders (the images sit directly in it): evaluation needs "
                f"<folder>/<class>/... (class_map maps folder names onto the classes {mapping.class_names})"
            )
        raise UserError(
            f"evaluate=true: none of the folders of {root} ({', '.join(seen)}) maps onto the classes "
            f"{mapping.class_names}: set class_map, e.g. {mapping.hint(seen)} (folders left out are predicted, "
            f"not evaluated)"
        )
    unmapped = {f: images[f] for f in seen if f not in folders}
    return FolderLabels(labels, folders, dict(images), unmapped, mapping)


def report_folders(found: FolderLabels, root: Path) -> None:
    """Say which folders are evaluated as which class, and loudly which are not."""
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
            "evaluate: %d images directly in %s (in no class folder) are predicted, NOT evaluated",
            found.images[""],
            root,
        )
    if found.unmapped:
        folders = list(found.unmapped) if found.mapping.given else [*found.folders, *found.unmapped]
        log.warning("evaluate: to evaluate them, map them onto classes: %s", found.mapping.hint(sorted(folders)))


def write_predictions(
    path: Path,
    files: Sequence[Path],
    class_names: Sequence[str],
    probs: torch.Tensor,
    errors: dict[int, str],
    labels: Sequence[int | None] | None = None,
    review: dict[int, str] | None = None,
) -> None:
    """The CSV: one row per file with path, (label,) predicted class, confidence, probabilities, review (why a
    person should look at it; empty when nothing calls for it), error."""
    review = review or {}
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        head = ["path"] + (["label"] if labels is not None else [])
        writer.writerow(head + ["predicted", "confidence", *[f"p/{c}" for c in class_names], "review", "error"])
        for i, file in enumerate(files):
            row = [str(file)] + ([class_names[labels[i]] if labels[i] is not None else ""] if labels else [])
            if i in errors:
                writer.writerow(row + ["", "", *[""] * len(class_names), "", errors[i]])
                continue
            p = probs[i]
            k = int(p.argmax())
            values = [class_names[k], f"{float(p[k]):.6f}", *[f"{float(v):.6f}" for v in p], review.get(i, ""), ""]
            writer.writerow(row + values)


def review_reasons(
    probs: torch.Tensor, errors: dict[int, str], notes: dict[int, list[str]], min_confidence: float
) -> dict[int, str]:
    """{index: why a person should check this prediction}: the input's own notes (no cell found, low
    resolution, grey-scale) and a calibrated confidence below ``min_confidence``."""
    reasons: dict[int, str] = {}
    for i in range(len(probs)):
        if i in errors:
            continue
        why = list(notes.get(i, []))
        confidence = float(probs[i].max())
        if confidence < min_confidence:
            why.append(f"low confidence ({confidence:.2f})")
        if why:
            reasons[i] = "; ".join(why)
    return reasons


def summarise(
    files: Sequence[Path], class_names: Sequence[str], probs: torch.Tensor, errors: dict[int, str]
) -> dict[str, Any]:
    predicted = [class_names[int(probs[i].argmax())] for i in range(len(files)) if i not in errors]
    counts = Counter(predicted)
    return {
        "files": len(files),
        "predicted": len(predicted),
        "errors": len(errors),
        "per_class": {c: counts.get(c, 0) for c in class_names},
        "error_files": {str(files[i]): why for i, why in sorted(errors.items())},
    }


def run(cfg: Any) -> int:
    """The predict command: returns the process exit code (0 when at least one file was predicted)."""
    from wbc.explain import GradCAM, save_gradcam, save_overlay

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        predictor = Predictor.from_checkpoint(cfg.ckpt_path, cfg.device, trust=cfg.trust_checkpoint)
        files, root = list_inputs(cfg.input)
    except (CheckpointError, FileNotFoundError) as err:
        log.error("%s", err)
        return 2
    if not files:
        log.error("no files found in %s", cfg.input)
        return 2
    names = predictor.class_names
    found = None
    if cfg.evaluate:  # before predicting: a mapping that maps nothing stops here, at once
        try:
            found = folder_labels(files, root, evaluation_mapping(names, cfg.class_map))
        except UserError as err:
            log.error("%s", err)
            return 2
        report_folders(found, root)
    cam = GradCAM(predictor.model, cfg.get("gradcam_method", "gradcam")) if cfg.gradcam else None

    def visualise(indices: list[int], images: np.ndarray, p: torch.Tensor) -> None:
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
            adapted = predictor.adapt(
                files, cfg.batch_size, cfg.decode_threads, cfg.max_pixels, um_per_px, cfg.adapt_min_images
            )
        except AdaptationError as err:
            log.error("%s", err)
            return 2
        log.info("adapt_bn: batch-norm statistics re-estimated on %d images of the input", adapted)
    probs, errors, notes = predict_files(
        predictor, files, cfg.batch_size, cfg.decode_threads, cfg.tta, cfg.max_pixels, on_batch, um_per_px
    )
    review = review_reasons(probs, errors, notes, cfg.review_confidence)
    labels = found.labels if found is not None else None
    write_predictions(out / "predictions.csv", files, names, probs, errors, labels, review)
    summary = summarise(files, names, probs, errors)
    summary |= {"review": len(review), "adapt_bn_images": adapted, "um_per_px": um_per_px}
    if found is not None:
        summary["evaluation"] = evaluate(out, names, probs, errors, found)
    (out / "summary.json").write_text(json.dumps(_json_safe(summary), indent=2, ensure_ascii=False))
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


def evaluate(
    out: Path, class_names: Sequence[str], probs: torch.Tensor, errors: dict[int, str], found: FolderLabels
) -> dict[str, Any]:
    """Full metric set (the training's test metrics: :class:`~wbc.metrics.ClassificationMetrics`), confusion
    matrices and per-class chart against the folder labels; metrics.json; returns the summary's part."""
    from wbc.artefacts import save_figures, write_json
    from wbc.calibration import expected_calibration_error
    from wbc.metrics import ClassificationMetrics, prefixed
    from wbc.plots import plot_coverage_accuracy, save_figure

    predicted = [i for i in range(len(found.labels)) if i not in errors]
    keep = [i for i in predicted if found.labels[i] is not None]
    counts = {
        "labelled": len(keep),  # predicted files in a class folder: evaluated
        "unlabelled": len(predicted) - len(keep),  # predicted files outside the mapped folders: not evaluated
        "unmapped_folders": found.unmapped,
        "outside_class_folders": found.images.get("", 0),
        "class_map": found.folders,
    }
    if not keep:
        return counts
    metrics = ClassificationMetrics(class_names)
    metrics.update(probs[keep], torch.tensor([found.labels[i] for i in keep]))
    values = prefixed(metrics.compute(), "test")
    confusion = metrics.confusion_matrix()
    absent = [c for c, row in zip(class_names, confusion.sum(dim=1).tolist(), strict=True) if row == 0]
    write_json(
        out / "metrics.json",
        {"test": values, "test_confusion_matrix": confusion.tolist(), **counts, "absent_classes": absent},
    )
    save_figures(out, class_names, confusion, values, history=[])
    target = torch.tensor([found.labels[i] for i in keep])
    ece = expected_calibration_error(probs[keep], target)
    curve = coverage_accuracy(probs[keep], target)
    write_json(out / "coverage_accuracy.json", curve)
    save_figure(plot_coverage_accuracy(curve), out / "coverage_accuracy.png")
    headline = {k.removeprefix("test/"): values[k] for k in ("test/accuracy", "test/f1_macro")}
    return {
        **counts,
        **headline,
        "f1_macro_n_classes": values["test/f1_macro_n_classes"],
        "ece": ece,
        "absent_classes": absent,
    }


def coverage_accuracy(probs: torch.Tensor, target: torch.Tensor, points: int = 20) -> list[dict[str, float]]:
    """Accuracy of the most confident predictions as a function of how many are kept (the rest go to a person):
    rows of coverage (share kept), the confidence threshold that keeps them, and their accuracy."""
    confidence, predicted = probs.max(dim=1)
    order = torch.argsort(confidence, descending=True)
    correct = (predicted == target)[order].double().cumsum(0)
    rows = []
    for k in sorted({max(1, round(len(order) * q / points)) for q in range(1, points + 1)}):
        rows.append(
            {
                "coverage": k / len(order),
                "threshold": float(confidence[order[k - 1]]),
                "accuracy": float(correct[k - 1] / k),
            }
        )
    return rows


def _relative(path: Path, root: Path | None, index: int) -> Path:
    """Where a file's overlay goes: its place below the input folder, else a numbered name (no collisions)."""
    try:
        return path.relative_to(root).with_suffix(".png")
    except (TypeError, ValueError):
        return Path(f"{index:06d}_{path.stem}.png")
