"""Does test-time classifier adjustment (wbc.t3a) hold up better on another lab's folder than the recipe's way to
predict? Each checkpoint's features and probabilities (the eight-view TTA) on labelled folders: the simulated lab
differences of scripts/shifted_sets.py, those named in --mixes also re-mixed (wbc.shifts.CLASS_MIXES), since a
lab's folder need not hold the training split's mix; then each way to decide: as trained (`train`), the folder's
own class mix (`folder`, the recipe), T3A with each --per-class support size, and T3A on the folder-mix
probabilities (`folder+t3a`: its supports chosen after the class-mix step).

    python scripts/t3a_shift.py --ckpt A/best.ckpt B/best.ckpt --out outputs/t3a_shift \\
        --folders none=outputs/shifted/none hue=outputs/shifted/hue lamp=outputs/shifted/lamp ... \\
        --mixes none,hue,lamp --eval lisc=../shared/data/lisc

Writes results.json and t3a_shift.md: macro-F1 per set and way (means over checkpoints) and the criterion (the
mean over the --folders sets and their re-mixes; --eval folders are reported, not part of it). Folders are
preprocessed once per preprocessing and cached (--cache), each checkpoint's features and probabilities too.
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
from wbc.t3a import adjusted_scores, embed, head  # noqa: E402


def features(predictor: Predictor, ckpt: str, name: str, folder: str, out: Path, cache: Path, class_map):
    """(labels, TTA features, TTA probabilities) of one checkpoint on one folder, cached in ``out``."""
    key = hashlib.sha1(f"{Path(ckpt).resolve()}|{Path(folder).resolve()}|{class_map}".encode()).hexdigest()[:10]
    path = out / f"features-{name}-{key}.npz"
    if path.exists():
        z = np.load(path)
        return z["y"], z["f"], z["p"]
    x, y = prepared_folder(predictor, folder, cache, name, class_map)
    fs, ps = [], []
    for i in range(0, len(x), 256):
        batch = torch.from_numpy(np.ascontiguousarray(x[i : i + 256])).permute(0, 3, 1, 2)
        f, p = embed(predictor.model, batch, tta=True)
        fs.append(f.numpy())
        ps.append(p.numpy())
    f, p = np.concatenate(fs), np.concatenate(ps)
    np.savez(path, y=y, f=f, p=p)
    return y, f, p


def decisions(f: np.ndarray, p: np.ndarray, weight: np.ndarray, source: np.ndarray, sizes: list[int | None]):
    """{way: predicted classes} for one folder."""
    q, _ = apply_prior(p, source, "folder", min_images=1)  # a study: every set, however small
    out = {"train": p.argmax(1), "folder": q.argmax(1)}
    for m in sizes:
        label = "all" if m is None else m
        out[f"t3a {label}"] = adjusted_scores(f, weight, p, m).argmax(1)
        out[f"folder+t3a {label}"] = adjusted_scores(f, weight, q, m).argmax(1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(parser, out="outputs/t3a_shift")
    parser.add_argument("--per-class", default="5,20,50,100,all", help="T3A support sizes per class (all: every)")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out, cache = study_paths(args)
    folders, evals, mixed, class_map = study_sets(args)
    sizes = [None if s == "all" else int(s) for s in args.per_class.split(",")]
    results = []
    for k, ckpt in enumerate(args.ckpt):
        predictor = Predictor.from_checkpoint(ckpt, "cpu")
        n_classes = len(predictor.class_names)
        source = training_prior(predictor.model.hparams, n_classes)
        weight = head(predictor.model.net).weight.detach().float().numpy()
        for name, folder in {**folders, **evals}.items():
            y, f, p = features(predictor, ckpt, name, folder, out, cache, class_map)
            for mix, idx in study_mixes(y, name in mixed).items():
                for way, pred in decisions(f[idx], p[idx], weight, source, sizes).items():
                    m = headline(y[idx], pred, None, n_classes)
                    row = {"checkpoint": ckpt, "k": k, "folder": name, "criterion": name in folders, "mix": mix}
                    results.append(row | {"images": len(idx), "way": way, **m})
                print(f"{k} {name} {mix} {len(idx)} done", flush=True)
        (out / "results.json").write_text(json.dumps({"results": results}, indent=1))
    (out / "t3a_shift.md").write_text(report(results, len(args.ckpt)))
    print(out / "t3a_shift.md")
    return 0


def report(results: list[dict], n_ckpt: int) -> str:
    """Macro-F1 per set and way, means over checkpoints; the criterion."""
    sets = list(dict.fromkeys((r["folder"], r["mix"], r["criterion"]) for r in results))
    ways = list(dict.fromkeys(r["way"] for r in results))

    def mean(rows: list[dict]) -> str:
        return f"{np.mean([r['f1_macro'] for r in rows]):.4f}" if rows else "-"

    lines = [
        f"# Test-time classifier adjustment (T3A) against the class-mix step (macro-F1 with TTA, mean of {n_ckpt} "
        "checkpoints)",
        "",
        "| set | class mix | images | " + " | ".join(ways) + " |",
        "|" + "---|" * (3 + len(ways)),
    ]
    for folder, mix, crit in sets:
        rows = [r for r in results if (r["folder"], r["mix"]) == (folder, mix)]
        where = folder if crit else f"{folder} (reported only)"
        cells = [mean([r for r in rows if r["way"] == w]) for w in ways]
        lines.append(f"| {where} | {mix} | {rows[0]['images']} | " + " | ".join(cells) + " |")
    lines += criterion_rows(results, "way", ways, mean)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
