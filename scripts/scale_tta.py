"""Should test-time augmentation also average over magnifications? Scale framing measures each folder's pixel
size on its red cells (7.5 um across), but red cells differ between people and labs (a normal diameter is
6.2-8.2 um, about +-10 %) and the locator's outline of them moves with the stain and the focus, so a lab's ruler
can err by some 10 %: its cells then reach the classifier 10 % too large or too small, and size is one of the
cues between lymphocytes, monocytes and neutrophils. Averaging the prediction over views magnified around 1
(:func:`wbc.models.module.zoomed`, the eight flips/rotations of each) would make it insensitive to that error.

The choice is made on PBC only: its test split with the ruler deliberately wrong by each factor of --rulers,
and the simulated lab differences of scripts/shifted_sets.py (each at its own measured ruler). Folders given
with --eval (another lab's) are reported, not part of the criterion.

    python scripts/scale_tta.py --ckpt A/best.ckpt B/best.ckpt --pbc outputs/shifted/none \\
        --folders magnified=outputs/shifted/magnified tight=outputs/shifted/tight --eval lisc=../shared/data/lisc

Writes results.json (macro-F1, accuracy, ECE per checkpoint, set and setting) and scale_tta.md (means over
checkpoints; the criterion is the mean over the PBC sets). Inputs are preprocessed once and cached in --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

from wbc.crossdata import headline, prepared_folder  # noqa: E402
from wbc.models.module import symmetry_views, zoomed  # noqa: E402
from wbc.predictor import Predictor  # noqa: E402

SETTINGS = "1x=1;+-10%=0.9,1,1.111;+-20%=0.8,0.9,1,1.111,1.25"


@torch.no_grad()
def per_scale_probabilities(predictor: Predictor, x: np.ndarray, scales: list[float], batch: int = 256) -> dict:
    """{scale: (N, C) probabilities, the mean over the eight flips/rotations of the view magnified by scale}."""
    out: dict[float, list[np.ndarray]] = {s: [] for s in scales}
    for i in range(0, len(x), batch):
        b = torch.from_numpy(np.ascontiguousarray(x[i : i + batch])).permute(0, 3, 1, 2).float() / 255
        for s in scales:
            views = symmetry_views(zoomed(b, s))
            out[s].append(torch.stack([predictor.model(v).float().softmax(1) for v in views]).mean(0).numpy())
    return {s: np.concatenate(v) for s, v in out.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--pbc", required=True, help="PBC's test split as a labelled folder (shifted_sets.py none)")
    parser.add_argument("--rulers", default="0.9,1,1.1", help="ruler errors the PBC test split is framed with")
    parser.add_argument("--folders", nargs="*", default=[], help="name=folder: more sets the choice is made on")
    parser.add_argument("--eval", nargs="*", default=[], help="name=folder: reported, not part of the criterion")
    parser.add_argument("--class-map", default=None, help="folder -> class, '{neut: Neutrophil, ...}'")
    parser.add_argument("--settings", default=SETTINGS, help="label=scale,scale;...")
    parser.add_argument("--out", default="outputs/scale_tta")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        label: [float(s) for s in v.split(",")] for label, v in (p.split("=", 1) for p in args.settings.split(";"))
    }
    scales = sorted({s for v in settings.values() for s in v})
    sets = {f"pbc ruler x{r}": (args.pbc, float(r), True) for r in args.rulers.split(",")}
    sets |= {n: (f, 1.0, True) for n, f in (a.split("=", 1) for a in args.folders)}
    sets |= {n: (f, 1.0, False) for n, f in (a.split("=", 1) for a in args.eval)}
    class_map = yaml.safe_load(args.class_map) if args.class_map else None
    results = []
    for k, ckpt in enumerate(args.ckpt):
        predictor = Predictor.from_checkpoint(ckpt, "cpu")
        for name, (folder, ruler, criterion) in sets.items():
            x, y = prepared_folder(predictor, folder, out, name.replace(" ", "_"), class_map, ruler)
            probs = per_scale_probabilities(predictor, x, scales)
            for label, chosen in settings.items():
                p = np.mean([probs[s] for s in chosen], axis=0)
                m = headline(y, p.argmax(1), p, len(predictor.class_names))
                results.append({"checkpoint": ckpt, "k": k, "set": name, "criterion": criterion, "images": len(y)})
                results[-1] |= {"setting": label, **m}
                print(f"{k} {name} {label}: macro-F1 {m['f1_macro']:.4f} ECE {m['ece']:.4f}", flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "scale_tta.md").write_text(report(results, list(settings), len(args.ckpt)))
    print(out / "scale_tta.md")
    return 0


def report(results: list[dict], settings: list[str], n_ckpt: int) -> str:
    """Macro-F1 (and ECE) per set, the mean over checkpoints; the criterion is the mean over the PBC sets."""

    def mean(rows: list[dict], key: str = "f1_macro") -> str:
        return f"{np.mean([r[key] for r in rows]):.4f}" if rows else ""

    lines = [
        f"# Test-time augmentation over magnifications (macro-F1, mean of {n_ckpt} checkpoints; ECE in brackets)",
        "",
        "Every setting averages the eight flips/rotations of each view; its scales are the views' magnifications.",
        "",
        "| set | images | " + " | ".join(settings) + " |",
        "|" + "---|" * (2 + len(settings)),
    ]
    for name in dict.fromkeys(r["set"] for r in results):
        rows = [r for r in results if r["set"] == name]
        cells = [
            f"{mean([r for r in rows if r['setting'] == s])} ({mean([r for r in rows if r['setting'] == s], 'ece')})"
            for s in settings
        ]
        label = name if rows[0]["criterion"] else f"{name} (reported only)"
        lines.append(f"| {label} | {rows[0]['images']} | " + " | ".join(cells) + " |")
    cells = [mean([r for r in results if r["criterion"] and r["setting"] == s]) for s in settings]
    lines.append("| **criterion: mean over the PBC sets** | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
