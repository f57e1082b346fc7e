"""Turn `ckpt_path=last` and `resume=<folder>` into the Hydra overrides that reopen an earlier run or sweep.

Hydra picks a run's folder before the run starts, so this happens on the command line, before Hydra:
`ckpt_path=last` finds the latest run under outputs/runs with the same overrides and a checkpoint;
`resume=<folder>` reuses that folder's own overrides. Either way the run continues in its own folder.

Sweeps (`-m`): `python train.py -m resume=<sweep folder>` (or `-m <the same overrides> ckpt_path=last`, which
finds the latest sweep under outputs/multirun started with them) reopens the sweep folder with its overrides;
Hydra numbers the jobs as before, and each job with `ckpt_path=last` skips itself when its folder holds a finished
run, continues from its checkpoint when it holds one, and starts otherwise (:func:`wbc.train.resume_checkpoint`).
"""

from __future__ import annotations

from pathlib import Path

import yaml

RUNS_ROOT = Path("outputs/runs")
SWEEPS_ROOT = Path("outputs/multirun")
_IGNORED = ("ckpt_path=", "resume=", "hydra.", "hydra/")


def _task_overrides(args: list[str]) -> list[str]:
    return sorted(a for a in args if "=" in a and not a.startswith(_IGNORED) and not a.startswith("-"))


def _saved_overrides(folder: Path) -> list[str] | None:
    path = folder / ".hydra" / "overrides.yaml"
    return yaml.safe_load(path.read_text()) or [] if path.is_file() else None


def _has_checkpoint(folder: Path) -> bool:
    return any((folder / "checkpoints" / n).is_file() for n in ("last.ckpt", "interrupted.ckpt"))


def find_previous_run(args: list[str], root: Path = RUNS_ROOT) -> Path | None:
    """The most recent run folder under ``root`` started with the same task overrides and holding a checkpoint."""
    wanted = _task_overrides(args)
    candidates = [f for f in root.glob("*/*") if f.is_dir() and _has_checkpoint(f)]
    for folder in sorted(candidates, key=lambda f: f.stat().st_mtime, reverse=True):
        saved = _saved_overrides(folder)
        if saved is not None and _task_overrides(saved) == wanted:
            return folder
    return None


def _saved_sweep_overrides(folder: Path) -> list[str] | None:
    path = folder / "multirun.yaml"
    if not path.is_file():
        return None
    saved = yaml.safe_load(path.read_text()) or {}
    return list(((saved.get("hydra") or {}).get("overrides") or {}).get("task") or [])


def sweep_task_overrides(folder: Path) -> list[str] | None:
    """The overrides a sweep folder was started with, less what a resume adds (ckpt_path, hydra.*); None when
    ``folder`` holds no multirun.yaml."""
    saved = _saved_sweep_overrides(folder)
    return None if saved is None else _task_overrides(saved)


def find_previous_sweep(args: list[str], root: Path = SWEEPS_ROOT) -> Path | None:
    """The most recent sweep folder under ``root`` started with the same task overrides."""
    wanted = _task_overrides(args)
    for path in sorted(root.glob("*/*/multirun.yaml"), key=lambda p: p.stat().st_mtime, reverse=True):
        saved = _saved_sweep_overrides(path.parent)
        if saved is not None and _task_overrides(saved) == wanted:
            return path.parent
    return None


def resume_sweep_arguments(args: list[str], root: Path = SWEEPS_ROOT) -> list[str]:
    """The arguments of a resumed sweep (``-m resume=<sweep folder>`` or ``-m ... ckpt_path=last``)."""
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if resume and resume != "null":
        folder = Path(resume)
        saved = _saved_sweep_overrides(folder)
        if saved is None:
            raise SystemExit(f"-m resume={folder}: not a sweep folder (no multirun.yaml in it)")
        extra = [a for a in args if not a.startswith(("resume=", "ckpt_path="))]
        keys = {a.split("=", 1)[0].lstrip("+~") for a in extra}
        kept = [a for a in saved if a.split("=", 1)[0].lstrip("+~") not in keys and not a.startswith(_IGNORED)]
        return [*extra, *kept, "ckpt_path=last", f"hydra.sweep.dir={folder}"]
    if "ckpt_path=last" in args and not any(a.startswith("hydra.sweep.dir=") for a in args):
        folder = find_previous_sweep(args, root)
        if folder is None:
            raise SystemExit(f"-m ckpt_path=last: no earlier sweep with these overrides under {root}")
        return [*args, f"hydra.sweep.dir={folder}"]
    return args


def resume_arguments(args: list[str], root: Path = RUNS_ROOT) -> list[str]:
    """Rewrite the command-line arguments of train.py for a resumed run or sweep (unchanged when not resuming)."""
    if "-m" in args or "--multirun" in args:
        return resume_sweep_arguments(args, root.parent / SWEEPS_ROOT.name)
    resume = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if resume and resume != "null":
        folder = Path(resume)
        saved = _saved_overrides(folder)
        if saved is None or not _has_checkpoint(folder):
            raise SystemExit(f"resume={folder}: not a run folder with .hydra/overrides.yaml and a checkpoint")
        extra = [a for a in args if not a.startswith(("resume=", "ckpt_path="))]
        keys = {a.split("=", 1)[0].lstrip("+~") for a in extra}
        kept = [a for a in saved if a.split("=", 1)[0].lstrip("+~") not in keys and not a.startswith(_IGNORED[:2])]
        return [*kept, *extra, f"resume={folder}", "ckpt_path=last", f"hydra.run.dir={folder}"]
    if "ckpt_path=last" in args:
        folder = find_previous_run(args, root)
        if folder is None:
            raise SystemExit(f"ckpt_path=last: no earlier run with these overrides and a checkpoint under {root}")
        return [*args, f"hydra.run.dir={folder}"]
    return args
