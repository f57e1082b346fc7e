"""SR on real small cells: the same classifier(s) on another lab's labelled folder, with each way of enlarging the
crops that come out smaller than S (a plain resize, bicubic, an SR model: :mod:`wbc.sr.native`), compared image by
cell against the first enlarger with the SR study's statistics (:func:`wbc.stats.paired_comparison` over cells:
crops of one cell, :func:`wbc.crossdata.same_cell_groups`, count once; a paired t-test over cells for one
classifier, the crossed seeds x cells analysis for several, Holm over the report's comparisons).

`python scripts/native_sr.py 'ckpt_paths=[.../best.ckpt]' 'datasets={lisc: ../shared/data/lisc}'
'enlargers={resize: none, bicubic: bicubic, espcn: <espcn-x2-....pt>}'` (see conf/native_sr.yaml).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wbc.crossdata import headline, same_cell_groups, thumbnails
from wbc.predict import evaluation_mapping, folder_labels, input_um_per_px, list_inputs, predict_files
from wbc.predictor import Predictor
from wbc.sr.native import NativeEnlarger, load_enlarger
from wbc.stats import holm, paired_comparison, verdict

log = logging.getLogger(__name__)

DEFAULT_ENLARGERS = {"resize": "none", "bicubic": "bicubic"}  # the first of a report is its baseline


def predict_with(
    predictor: Predictor,
    enlarger: NativeEnlarger | None,
    files: Sequence[Path],
    adapt_bn: bool,
    um_per_px: float | None,
    batch_size: int = 64,
    threads: int = 2,
    on_batch: Callable[[list[int], np.ndarray, torch.Tensor], None] | None = None,
) -> tuple[np.ndarray, set[int]]:
    """Predicted classes of ``files`` with ``enlarger`` in the predictor's pipeline (None: its own), after AdaBN on
    the same images when ``adapt_bn``; and the indices of the files that failed. The predictor is left as it was;
    ``on_batch`` sees every batch (as :func:`~wbc.predict.predict_files`)."""
    pre = predictor.preprocessor
    saved_enlarger, saved_state = pre.enlarger, copy.deepcopy(predictor.model.state_dict())
    try:
        if enlarger is not None:
            pre.enlarger = enlarger
        if adapt_bn:
            predictor.adapt(files, batch_size, threads, um_per_px=um_per_px)
        probs, errors, _ = predict_files(predictor, files, batch_size, threads, um_per_px=um_per_px, on_batch=on_batch)
    finally:
        pre.enlarger = saved_enlarger
        predictor.model.load_state_dict(saved_state)
    return probs.argmax(1).numpy(), set(errors)


def small_crop_share(predictor: Predictor, files: Sequence[Path], um_per_px: float | None, limit: int = 200) -> dict:
    """How many of (up to ``limit``, spread over) ``files`` are framed at fewer pixels than S, and their median side."""
    from wbc.data.decode import read_image

    step = max(1, len(files) // limit)
    sides = []
    for f in list(files)[::step]:
        try:
            framed = predictor.preprocessor.framing(read_image(f), um_per_px)
        except Exception:
            continue
        sides.append(min(framed.image.shape[:2]))
    size = predictor.preprocessor.image_size
    sides_arr = np.array(sides, dtype=float)
    return {
        "sampled": len(sides),
        "smaller_than_S": int((sides_arr < size).sum()),
        "median_side": float(np.median(sides_arr)) if len(sides) else None,
        "image_size": size,
    }


def compare_enlargers(
    predictors: Sequence[Predictor],
    folder: str | Path,
    enlargers: Mapping[str, NativeEnlarger],
    adapt_bn: bool = False,
    class_map: Mapping[str, str] | None = None,
    um_per_px: float | None = None,
    batch_size: int = 64,
    threads: int = 2,
) -> dict[str, Any]:
    """Every enlarger on one labelled folder with every classifier (one per training seed): per enlarger the mean
    accuracy and macro-F1 over classifiers, and the paired comparison of each enlarger against the first one."""
    files, root = list_inputs(folder)
    names = predictors[0].class_names
    found = folder_labels(files, root, evaluation_mapping(names, class_map))
    labelled = np.array([label is not None for label in found.labels])
    y_all = np.array([-1 if label is None else label for label in found.labels])
    um = input_um_per_px(predictors[0], files, um_per_px, threads)
    preds: dict[str, list[np.ndarray]] = {name: [] for name in enlargers}
    failed: set[int] = set()
    thumbs = np.zeros((len(files), 16 * 16 * 3), np.float32)  # crops of one cell: one unit of the comparison

    def keep_thumbnails(indices: list[int], images: np.ndarray, _: torch.Tensor) -> None:
        thumbs[indices] = thumbnails(images)

    for k, predictor in enumerate(predictors):
        for j, (name, enlarger) in enumerate(enlargers.items()):
            look = keep_thumbnails if k == j == 0 else None
            pred, errors = predict_with(predictor, enlarger, files, adapt_bn, um, batch_size, threads, look)
            preds[name].append(pred)
            failed |= errors
            log.info("classifier %d, enlarger %s, adapt_bn=%s: done", k, name, adapt_bn)
    keep = np.array([labelled[i] and i not in failed for i in range(len(files))])
    y = y_all[keep]
    result: dict[str, Any] = {"folder": str(folder), "adapt_bn": adapt_bn, "images": int(keep.sum()),
                              "failed": len(failed), "um_per_px": um, "rows": []}  # fmt: skip
    result["crops"] = small_crop_share(predictors[0], [f for f, k in zip(files, keep, strict=True) if k], um)
    groups = same_cell_groups(thumbs[keep])
    result["cells"] = len(np.unique(groups))
    correct = {name: [(p[keep] == y).astype(float) for p in rows] for name, rows in preds.items()}
    baseline = next(iter(enlargers))
    for name in enlargers:
        per_seed = [headline(y, p[keep], None, len(names)) for p in preds[name]]
        row: dict[str, Any] = {
            "enlarger": name,
            "accuracy": float(np.mean([m["accuracy"] for m in per_seed])),
            "f1_macro": float(np.mean([m["f1_macro"] for m in per_seed])),
            "seeds": len(per_seed),
        }
        if name != baseline:
            row["vs"] = baseline
            row["test"] = paired_comparison(correct[name], correct[baseline], groups=groups)
        result["rows"].append(row)
    return result


def add_verdicts(results: Sequence[dict[str, Any]]) -> None:
    """Holm-adjusted p and a verdict (helped / hurt / no measurable difference) on every comparison of the report."""
    tests = [row["test"] for r in results for row in r["rows"] if "test" in row]
    for test, p_adj in zip(tests, holm([t["p"] for t in tests]), strict=True):
        test["p_holm"] = p_adj
        test["verdict"] = verdict(test["diff"], p_adj)


def write_report(results: Sequence[dict[str, Any]], out: Path, title: str) -> str:
    """native_sr.md: one row per folder, adaptation setting and enlarger; the verdict lines."""
    lines = [f"# {title}", ""]
    lines += [
        "| dataset | adapt_bn | enlarger | images (cells) | accuracy | macro-F1 | difference vs first (95 % CI) | "
        "p (Holm) | smallest detectable | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        for row in r["rows"]:
            t = row.get("test")
            diff = f"{100 * t['diff']:+.2f} [{100 * t['lo']:+.2f}, {100 * t['hi']:+.2f}] pt" if t else ""
            p = f"{t['p']:.3g} ({t['p_holm']:.3g})" if t else ""
            mdd = f"{100 * t['mdd']:.2f} pt" if t else ""
            images = f"{r['images']} ({r.get('cells', r['images'])})"
            lines.append(
                f"| {r['name']} | {'yes' if r['adapt_bn'] else 'no'} | {row['enlarger']} | {images} | "
                f"{row['accuracy']:.4f} | {row['f1_macro']:.4f} | {diff} | {p} | {mdd} | {t['verdict'] if t else ''} |"
            )
    lines.append("")
    for r in results:
        c = r["crops"]
        lines.append(
            f"- {r['name']}: {c['smaller_than_S']} of {c['sampled']} sampled crops smaller than S={c['image_size']} "
            f"(median side {c['median_side']:.0f} px at {r['um_per_px'] or float('nan'):.4f} um/px); "
            f"{r['failed']} file(s) failed."
        )
    tests = [t for r in results for row in r["rows"] if (t := row.get("test"))]
    if tests:
        lines.append(f"- Statistics: {tests[0]['method']}; Holm over the {len(tests)} comparisons of this report.")
    text = "\n".join(lines) + "\n"
    out.mkdir(parents=True, exist_ok=True)
    (out / "native_sr.md").write_text(text)
    return text


def run(cfg: Any) -> int:
    """The native_sr command; returns the exit code (2: bad checkpoint, folder or enlarger)."""
    from wbc.crossdata import _settings
    from wbc.errors import UserError
    from wbc.predictor import CheckpointError
    from wbc.reports.artefacts import write_json

    out = Path(cfg.output_dir)
    paths = [cfg.ckpt_paths] if isinstance(cfg.ckpt_paths, str) else list(cfg.ckpt_paths)
    try:
        predictors = [Predictor.from_checkpoint(p, cfg.device, trust=cfg.trust_checkpoint) for p in paths]
        specs = dict(cfg.enlargers) if cfg.enlargers else dict(DEFAULT_ENLARGERS)
        enlargers = {name: load_enlarger(spec, cfg.device) for name, spec in specs.items()}
    except (CheckpointError, ValueError) as err:
        log.error("%s", err)
        return 2
    if len(enlargers) < 2:
        log.error("enlargers: give at least two (the first is the baseline the others are compared with)")
        return 2
    class_map = None if cfg.class_map is None else dict(cfg.class_map)
    results = []
    for name, folder in dict(cfg.datasets).items():
        for adapt in _settings(cfg.adapt_bn):
            try:
                r = compare_enlargers(predictors, folder, enlargers, adapt, class_map, cfg.um_per_px,
                                      cfg.batch_size, cfg.decode_threads)  # fmt: skip
            except (UserError, FileNotFoundError, ValueError) as err:
                log.error("%s: %s", name, err)
                return 2
            r["name"] = name
            results.append(r)
    add_verdicts(results)
    write_json(out / "native_sr.json", {"checkpoints": paths, "enlargers": specs, "results": results})
    print(write_report(results, out, f"Native SR: {len(paths)} classifier(s), enlargers {', '.join(enlargers)}"))
    return 0
