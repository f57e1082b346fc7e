"""Which batch-norm layers should AdaBN re-estimate? Each checkpoint is evaluated on labelled folders (the
simulated lab differences of scripts/shifted_sets.py, and any others) as trained and with AdaBN over each choice
of layers; the folders named in --mixes are also evaluated under other class mixes (wbc.shifts.CLASS_MIXES:
uniform, a normal differential, lymphocyte- and monocyte-rich), since a lab's folder need not hold the training
split's mix and AdaBN takes the folder's statistics as the population's. A setting whose label ends in
"@train" re-estimates on a resample of the folder in the training split's class mix (wbc.adapt.training_mix_sample:
each image weighted by its class probabilities, as trained, under the folder's mix estimated by EM).

    python scripts/adabn_layers.py --ckpt A/best.ckpt B/best.ckpt --out outputs/adabn_layers \\
        --folders none=outputs/shifted/none hue=outputs/shifted/hue lamp=outputs/shifted/lamp \\
        --mixes none,hue,lamp --eval lisc=../shared/data/lisc

Writes results.json (macro-F1 and accuracy per checkpoint, folder, mix and setting) and adabn_layers.md (means
over checkpoints; the mean over the --folders sets is the criterion; --eval folders are reported, not part of
it). Every folder is preprocessed once per preprocessing (the checkpoints' own) and cached (--cache, default --out).
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

from wbc.adapt import adapt_batchnorm, training_mix_sample  # noqa: E402
from wbc.crossdata import headline, prepared_folder  # noqa: E402
from wbc.predictor import Predictor  # noqa: E402
from wbc.prior import estimate_prior, training_prior  # noqa: E402
from wbc.shifts import add_study_arguments, criterion_rows, study_mixes, study_paths, study_sets  # noqa: E402

LAYERS = ";".join(
    [
        "all=*",
        "stem+layer1=net.bn1,net.layer1",
        "to layer2=net.bn1,net.layer1,net.layer2",
        "to layer3=net.bn1,net.layer1,net.layer2,net.layer3",
    ]
)


def _probabilities(predictor: Predictor, x: np.ndarray) -> np.ndarray:
    return np.concatenate([predictor.probabilities(x[i : i + 256]).numpy() for i in range(0, len(x), 256)])


def _batches(x: np.ndarray, size: int):
    for i in range(0, len(x), size):
        yield torch.from_numpy(np.ascontiguousarray(x[i : i + size])).permute(0, 3, 1, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_study_arguments(parser, out="outputs/adabn_layers")
    parser.add_argument(
        "--layers",
        default=LAYERS,
        help="label=prefix,prefix;... (* is every batch-norm layer; a label ending in @train: in the training mix)",
    )
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out, cache = study_paths(args)
    folders, evals, mixed, class_map = study_sets(args)
    settings: dict[str, list[str] | None] = {"as trained": None}
    for part in args.layers.split(";"):
        label, prefixes = part.split("=", 1)
        settings[label] = [] if prefixes == "*" else prefixes.split(",")
    results = []
    for k, ckpt in enumerate(args.ckpt):
        predictor = Predictor.from_checkpoint(ckpt, "cpu")
        source = training_prior(predictor.model.hparams, len(predictor.class_names))
        state = {n: v.clone() for n, v in predictor.model.state_dict().items()}
        for name, folder in {**folders, **evals}.items():
            x, y = prepared_folder(predictor, folder, cache, name, class_map)
            for mix, idx in study_mixes(y, name in mixed).items():
                sub = x[idx]
                trained = None
                for label, prefixes in settings.items():
                    predictor.model.load_state_dict(state)
                    if prefixes is not None:
                        at = sub
                        if label.endswith("@train"):
                            at = sub[training_mix_sample(trained, source, estimate_prior(trained, source)[0])]
                        adapt_batchnorm(predictor.model, _batches(at, 64), 2, prefixes or None)
                    p = _probabilities(predictor, sub)
                    if prefixes is None:
                        trained = p
                    m = headline(y[idx], p.argmax(1), p, len(predictor.class_names))
                    row = {"checkpoint": ckpt, "k": k, "folder": name, "criterion": name in folders, "mix": mix}
                    results.append(row | {"images": len(idx), "setting": label, **m})
                    print(f"{k} {name} {mix} {len(idx)} {label}: macro-F1 {m['f1_macro']:.4f}", flush=True)
        predictor.model.load_state_dict(state)
        (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "adabn_layers.md").write_text(report(results, list(settings), len(args.ckpt)))
    print(out / "adabn_layers.md")
    return 0


def report(results: list[dict], settings: list[str], n_ckpt: int) -> str:
    """Macro-F1 per set (mean over checkpoints) and the criterion: the mean over the --folders sets."""
    sets = list(dict.fromkeys((r["folder"], r["mix"], r["criterion"]) for r in results))

    def mean(rows: list[dict]) -> str:
        return f"{np.mean([r['f1_macro'] for r in rows]):.4f}" if rows else ""

    lines = [
        f"# AdaBN: which batch-norm layers (macro-F1, mean of {n_ckpt} checkpoints)",
        "",
        "| set | class mix | images | " + " | ".join(settings) + " |",
        "|" + "---|" * (3 + len(settings)),
    ]
    for folder, mix, crit in sets:
        rows = [r for r in results if (r["folder"], r["mix"]) == (folder, mix)]
        cells = [mean([r for r in rows if r["setting"] == s]) for s in settings]
        lines.append(
            f"| {folder}{'' if crit else ' (reported only)'} | {mix} | {rows[0]['images']} | "
            + " | ".join(cells)
            + " |"
        )
    lines += criterion_rows(results, "setting", settings, mean)
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
