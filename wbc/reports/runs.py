"""The runs of a sweep folder, as the SR study's comparison reads them: loading, labelling and grouping.

Runs are grouped by the config options they ran (data, model, sr: Hydra's choices, so sr=edsr and sr=edsr_small are
two methods), image size and lr_scale; seeds (with split seeds) are the replicates.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from wbc.sr.registry import method_names
from wbc.stats import mean_interval


# -- loading ------------------------------------------------------------------------------------------------------
def _variant(run: dict) -> tuple:
    """What an sr option contained in this run: two runs of one option that differ here are two methods."""
    arch = run.get("sr_arch")
    return (run.get("sr_backend", "torch"), json.dumps(arch, sort_keys=True) if arch else "", run.get("sr_weights"))


def _label_variants(runs: list[dict[str, Any]]) -> None:
    """Give each run its method label: the sr option, plus what differs when one option ran in several forms
    (e.g. sr=edsr on a GPU and on a CPU, sr.backend=opencv, another sr.arch)."""
    variants: dict[str, set[tuple]] = defaultdict(set)
    for r in runs:
        variants[r["run"]["sr"]].add(_variant(r["run"]))
    for r in runs:
        info = r["run"]
        label = info["sr"]
        if len(variants[label]) > 1:
            backend, arch, weights = _variant(info)
            bits = [backend] if backend != "torch" else []
            bits += [f"{k}={v}" for k, v in sorted((info.get("sr_arch") or {}).items())] if arch else []
            bits += [Path(weights).name] if weights else []
            label = f"{label} ({', '.join(bits) or 'default'})"
        r["label"] = label


def load_runs(root: Path) -> list[dict[str, Any]]:
    """Every finished run below ``root``: its metrics.json plus its test predictions (path -> correct).

    Runs written before the options were recorded (no ``data``/``sr_method`` in metrics.json's ``run``) are read
    with what they have: their source name as data option, their sr method as sr option.
    """
    runs = []
    for path in sorted(Path(root).glob("**/metrics.json")):
        data = json.loads(path.read_text())
        if "skipped" in data or "test" not in data:
            continue
        info = dict(data["run"])
        info.setdefault("data", info.get("source", "unknown"))
        info.setdefault("sr_method", info.get("sr", "none"))
        info.setdefault("split_seed", 0)
        predictions = path.parent / "test_predictions.csv"
        correct = {}
        if predictions.exists():
            with predictions.open() as f:
                correct = {row["path"]: int(row["correct"]) for row in csv.DictReader(f)}
        flat = {k: v for k, v in data["test"].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in (data.get("sr") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                flat[f"sr/{key}"] = value
        timing_path = path.parent / "run.json"
        if data.get("sr") and timing_path.exists():  # timings live apart from the deterministic metrics
            ms = json.loads(timing_path.read_text()).get("sr_ms_per_image")
            if ms is not None:
                flat["sr/ms_per_image"] = ms
        runs.append({"dir": path.parent, "run": info, "metrics": flat, "correct": correct})
    _label_variants(runs)
    return runs


# -- grouping -----------------------------------------------------------------------------------------------------
def study_key(run: dict) -> tuple:
    """(data, model, image size): one study; its methods and factors are compared with each other."""
    r = run["run"]
    return (str(r["data"]), str(r["model"]), r["image_size"])


def group_key(run: dict) -> tuple:
    """(data, model, image size, method label, lr_scale): the runs of one group are replicates."""
    return (*study_key(run), run["label"], run["run"]["lr_scale"])


def replicate(run: dict) -> tuple[int, int]:
    """(split seed, seed) of a run."""
    return (run["run"].get("split_seed", 0), run["run"]["seed"])


def is_baseline(run: dict) -> bool:
    return run["run"].get("sr_method", run["run"]["sr"]) == "none"


def method_rank(label: str, method: str) -> tuple:
    """Sort key of a method in tables and figures: the SR registry's order, then the label."""
    order = method_names()
    return (order.index(method) if method in order else len(order), label)


def _sort_key(row: dict) -> tuple:
    return (row["data"], row["model"], row["image_size"], row["lr_scale"], method_rank(row["sr"], row["sr_method"]))


def summarise(runs: list[dict]) -> list[dict[str, Any]]:
    """One row per group: mean, std and 95% CI over seeds of every metric."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        groups[group_key(run)].append(run)
    rows = []
    for key, members in groups.items():
        data, model, size, label, f = key
        names = sorted({k for m in members for k in m["metrics"]})
        stats = {name: mean_interval([m["metrics"].get(name) for m in members]) for name in names}
        replicates = sorted(replicate(m) for m in members)
        rows.append(
            {
                "data": data,
                "model": model,
                "image_size": size,
                "sr": label,
                "sr_method": members[0]["run"]["sr_method"],
                "lr_scale": f,
                "seeds": [seed for _, seed in replicates],
                "replicates": [list(r) for r in replicates],
                "accuracy_per_seed": [m["metrics"].get("test/accuracy") for m in sorted(members, key=replicate)],
                "stats": stats,
            }
        )
    return sorted(rows, key=_sort_key)


# -- example cells ------------------------------------------------------------------------------------------------
def sweep_examples(runs: list[dict]) -> tuple[dict[str, np.ndarray], str] | None:
    """The columns (LR | bicubic | each method | reference) of the runs' saved example cells (sr_examples.npz) at
    the largest size, then the largest f: where SR has the most to do; and their title. None without examples."""
    found: dict[tuple[int, int], dict[str, Path]] = defaultdict(dict)
    methods: dict[str, str] = {}
    for r in runs:
        path = r["dir"] / "sr_examples.npz"
        if r["run"]["lr_scale"] > 1 and path.exists():
            found[(r["run"]["image_size"], r["run"]["lr_scale"])][r["label"]] = path
            methods[r["label"]] = r["run"]["sr_method"]
    if not found:
        return None
    size, f = max(found)
    columns: dict[str, np.ndarray] = {}
    for label, path in found[(size, f)].items():
        data = np.load(path)
        for i, name in enumerate(data["names"]):
            name = str(name)
            if name not in ("bicubic",) and not name.startswith(("LR", "reference")):
                name = label  # the method's own column, under the option it ran
            columns.setdefault(name, data[f"col{i}"])

    def order(name: str) -> tuple:
        if name.startswith("LR"):
            return (0,)
        if name.startswith("reference"):
            return (2,)
        return (1, *method_rank(name, "bicubic" if name == "bicubic" else methods.get(name, name)))

    return {n: columns[n] for n in sorted(columns, key=order)}, f"test cells at {size} px, x{f}"
