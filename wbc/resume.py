"""Turn `ckpt_path=last` and `resume=<run folder>` into the Hydra overrides that reopen an earlier run's folder.

Hydra picks a run's folder before the run starts, so this happens on the command line, before Hydra:
`ckpt_path=last` finds the latest run under outputs/runs with the same overrides and a checkpoint;
`resume=<folder>` reuses that folder's own overrides. Either way the run continues in its own folder.
"""

from __future__ import annotations

from pathlib import Path

import yaml

RUNS_ROOT = Path("outputs/runs")
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


def resume_arguments(args: list[str], root: Path = RUNS_ROOT) -> list[str]:
    """Rewrite the command-line arguments of train.py for a resumed run (unchanged when not resuming)."""
    if "-m" in args or "--multirun" in args:
        return args
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
