"""Which class mix should a model assume of another lab's folder (wbc.prior)? Each checkpoint's probabilities (with
the eight-view TTA, the recipe's way to predict) on labelled folders: the simulated lab differences of
scripts/shifted_sets.py, those named in --mixes also re-mixed (wbc.shifts.CLASS_MIXES: every class alike, a normal
differential, lymphocyte- and monocyte-rich), since a lab's folder need not hold the training split's mix; then
each prior: train (as trained), uniform, folder (the folder's own mix, estimated by EM on its images).

    python scripts/prior_shift.py --ckpt A/best.ckpt B/best.ckpt --out outputs/prior_shift \\
        --folders none=outputs/shifted/none hue=outputs/shifted/hue lamp=outputs/shifted/lamp ... \\
        --mixes none,hue,lamp --eval lisc=../shared/data/lisc

Writes results.json and prior_shift.md: macro-F1 and ECE per set and prior (means over checkpoints), the
criterion (the mean over the --folders sets and their re-mixes; --eval folders are reported, not part of it), and
how many images the folder estimate needs: random sub-folders of each criterion set, accuracy with the folder's
estimated mix against the training mix. Folders are preprocessed once per preprocessing and cached (--cache), and
each checkpoint's probabilities too (resumable).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from wbc.crossdata import headline, prepared_folder  # noqa: E402
from wbc.predictor import Predictor  # noqa: E402
from wbc.prior import apply_prior, training_prior  # noqa: E402
from wbc.shifts import add_study_arguments, criterion_rows, study_mixes, study_paths, study_sets  # noqa: E402

PRIORS = ("train", "uniform", "folder")
SIZES = (16, 32, 64, 128, 256)  # sub-folder sizes of the estimate's study


def probabilities(predictor: Predictor, ckpt: str, name: str, folder: str, out: Path, cache: Path, class_map):
    """(labels, TTA probabilities) of one checkpoint on one folder, cached in ``out``."""
    key = hashlib.sha1(f"{Path(ckpt).resolve()}|{Path(folder).resolve()}|{class_map}".encode()).hexdigest()[:10]
    path = out / f"probs-{name}-{key}.npz"
    if path.exists():
        z = np.load(path)
        return z["y"], z["p"]
    x, y = prepared_folder(predictor, folder, cache, name, class_map)
    p = np.concatenate([predictor.probabilities(x[i : i + 256], tta=True).numpy() for i in range(0, len(x), 256)])
    np.savez(path, y=y, p=p)
    return y, p


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(parser, out="outputs/prior_shift")
    parser.add_argument("--repeats", type=int, default=100, help="random sub-folders per set, mix and size")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out, cache = study_paths(args)
    folders, evals, mixed, class_map = study_sets(args)
    results, sizes = [], []
    rng = np.random.default_rng(0)
    for k, ckpt in enumerate(args.ckpt):
        predictor = Predictor.from_checkpoint(ckpt, "cpu")
        n_classes = len(predictor.class_names)
        source = training_prior(predictor.model.hparams, n_classes)
        for name, folder in {**folders, **evals}.items():
            y, p = probabilities(predictor, ckpt, name, folder, out, cache, class_map)
            for mix, idx in study_mixes(y, name in mixed).items():
                for prior in PRIORS:
                    q, used = apply_prior(p[idx], source, prior, min_images=1)  # a study: every set
                    m = headline(y[idx], q.argmax(1), q, n_classes)
                    row = {"checkpoint": ckpt, "k": k, "folder": name, "criterion": name in folders, "mix": mix}
                    results.append(row | {"images": len(idx), "prior": prior, "prior_mix": used.tolist(), **m})
                    print(f"{k} {name} {mix} {len(idx)} {prior}: macro-F1 {m['f1_macro']:.4f}", flush=True)
                if name not in folders:
                    continue
                for n in SIZES:  # how many images the estimate needs: random sub-folders of this set
                    gains = []
                    for _ in range(args.repeats // len(args.ckpt) or 1):
                        sub = rng.choice(idx, min(n, len(idx)), replace=False)
                        q, _ = apply_prior(p[sub], source, "folder", min_images=1)
                        gains.append(float((q.argmax(1) == y[sub]).mean() - (p[sub].argmax(1) == y[sub]).mean()))
                    sizes.append({"k": k, "folder": name, "mix": mix, "n": n, "gains": gains})
        (out / "results.json").write_text(json.dumps({"results": results, "sizes": sizes}, indent=1))
    (out / "prior_shift.md").write_text(report(results, sizes, len(args.ckpt)))
    print(out / "prior_shift.md")
    return 0


def report(results: list[dict], sizes: list[dict], n_ckpt: int) -> str:
    """Macro-F1 (ECE) per set and prior, means over checkpoints; the criterion; the estimate's study."""
    sets = list(dict.fromkeys((r["folder"], r["mix"], r["criterion"]) for r in results))

    def mean(rows: list[dict], key: str = "f1_macro") -> float:
        return float(np.mean([r[key] for r in rows])) if rows else float("nan")

    lines = [
        f"# Class priors: as trained, uniform, each folder's own (macro-F1 / ECE with TTA, mean of {n_ckpt} "
        "checkpoints)",
        "",
        "| set | class mix | images | " + " | ".join(PRIORS) + " |",
        "|" + "---|" * (3 + len(PRIORS)),
    ]
    for folder, mix, crit in sets:
        rows = [r for r in results if (r["folder"], r["mix"]) == (folder, mix)]
        by_prior = [[r for r in rows if r["prior"] == p] for p in PRIORS]
        cells = [f"{mean(got):.4f} / {mean(got, 'ece'):.3f}" for got in by_prior]
        where = folder if crit else f"{folder} (reported only)"
        lines.append(f"| {where} | {mix} | {rows[0]['images']} | " + " | ".join(cells) + " |")
    lines += criterion_rows(results, "prior", PRIORS, lambda rows: f"{mean(rows):.4f}")
    lines += [
        "",
        "How many images the folder's estimate needs: random sub-folders of each criterion set and mix, accuracy with "
        "the estimated mix minus accuracy as trained (percentage points; mean, and the share of sub-folders it made "
        "worse):",
        "",
        "| images | " + " | ".join(dict.fromkeys(f"{s['folder']}/{s['mix']}" for s in sizes)) + " | all |",
        "|" + "---|" * (2 + len(dict.fromkeys((s["folder"], s["mix"]) for s in sizes))),
    ]

    def gain(values: list[float]) -> str:
        return f"{100 * np.mean(values):+.2f} ({100 * np.mean(np.array(values) < 0):.0f} %)"

    for n in SIZES:
        row, every = [], []
        for folder, mix in dict.fromkeys((s["folder"], s["mix"]) for s in sizes):
            gains = [g for s in sizes if (s["folder"], s["mix"], s["n"]) == (folder, mix, n) for g in s["gains"]]
            every += gains
            row.append(gain(gains))
        lines.append(f"| {n} | " + " | ".join(row) + f" | {gain(every)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
