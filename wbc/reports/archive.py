"""A sweep's results without its weights: pack the finished jobs of a sweep folder into one small file per job, and
unpack them into a sweep folder again.

Why: a long sweep (the SR study: 130 trainings, tens of CPU-hours) outlives the machine it started on, and its
folder holds gigabytes of checkpoints nobody needs for the report. The archive keeps what the report and a resume
read: each job's metrics.json, run.json, test_predictions.csv, its Hydra overrides and config, and the sweep's
multirun.yaml (text only, a few tens of kB a job; not the SR example cells, sr_examples.npz, about 170 kB a job:
the report draws its example grid from the jobs whose folders hold them). Unpacked into a sweep folder,
`python train.py -m resume=<folder>` skips the archived jobs (their metrics.json says they finished) and trains the
rest, and `scripts/compare.py <folder>` reports them all.

    python scripts/sweep_archive.py pack outputs/sr_pbc results/sr_pbc     # after each session
    python scripts/sweep_archive.py unpack results/sr_pbc outputs/sr_pbc   # on a new machine, then resume

Packing is deterministic (a job packs to the same bytes every time) and a job already archived with the same
metrics.json is left as archived (a resume that skips a finished job rewrites its Hydra record), so re-packing a
sweep changes only the files of newly finished jobs; unpacking never overwrites a job folder that holds its own
metrics.json.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from wbc.resume import sweep_task_overrides
from wbc.train import finished_run

KEPT = (
    "metrics.json",
    "run.json",
    "test_predictions.csv",
    ".hydra/overrides.yaml",
    ".hydra/config.yaml",
)
SWEEP_FILE = "multirun.yaml"
SUFFIX = ".json.gz"


def _jobs(sweep: Path) -> list[Path]:
    """The job folders of a sweep (Hydra numbers them 0, 1, ...), in job order."""
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def pack(sweep: str | Path, archive: str | Path) -> dict[str, list[str]]:
    """Write ``archive/<job>.json.gz`` for every finished job of ``sweep`` (and its multirun.yaml).

    An archive of another sweep (other overrides) is refused. Returns the jobs ``written`` (new, or with
    another metrics.json), ``unchanged`` and ``unfinished`` (not packed)."""
    sweep, archive = Path(sweep), Path(archive)
    if not (sweep / SWEEP_FILE).is_file():
        raise FileNotFoundError(f"{sweep}: not a sweep folder (no {SWEEP_FILE} in it)")
    if (archive / SWEEP_FILE).is_file() and sweep_task_overrides(archive) != sweep_task_overrides(sweep):
        raise ValueError(f"{archive} holds another sweep than {sweep} (other overrides); pack into a new folder")
    archive.mkdir(parents=True, exist_ok=True)
    (archive / SWEEP_FILE).write_bytes((sweep / SWEEP_FILE).read_bytes())
    report: dict[str, list[str]] = {"written": [], "unchanged": [], "unfinished": []}
    for job in _jobs(sweep):
        if finished_run(job) is None:
            report["unfinished"].append(job.name)
            continue
        files = {name: (job / name).read_bytes().decode() for name in KEPT if (job / name).is_file()}
        payload = json.dumps({"job": job.name, "files": files}, sort_keys=True).encode()
        packed = gzip.compress(payload, mtime=0)  # no timestamp in the header: the same job packs to the same bytes
        target = archive / f"{job.name}{SUFFIX}"
        if target.is_file() and _archived_metrics(target) == files.get("metrics.json"):
            # the same result: the bytes, or a resume that skipped the job and rewrote only its Hydra record
            # (ckpt_path=last added); the first record, of the run that trained, is kept
            report["unchanged"].append(job.name)
        else:
            target.write_bytes(packed)
            report["written"].append(job.name)
    return report


def _archived_metrics(target: Path) -> str | None:
    return json.loads(gzip.decompress(target.read_bytes()))["files"].get("metrics.json")


def unpack(archive: str | Path, sweep: str | Path) -> dict[str, list[str]]:
    """Recreate the archived jobs in ``sweep``. A job folder that already holds a metrics.json is left as it is;
    a sweep folder started with other overrides than the archive's is refused (another sweep).

    Returns the jobs ``restored`` and ``kept`` (already there)."""
    archive, sweep = Path(archive), Path(sweep)
    source = archive / SWEEP_FILE
    if not source.is_file():
        raise FileNotFoundError(f"{archive}: not a sweep archive (no {SWEEP_FILE} in it)")
    target = sweep / SWEEP_FILE
    if not target.is_file():
        sweep.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    elif sweep_task_overrides(sweep) != sweep_task_overrides(archive):  # what a resume adds is not counted
        raise ValueError(f"{target}: another sweep than {source} (other overrides); unpack into a new folder")
    report: dict[str, list[str]] = {"restored": [], "kept": []}
    for path in sorted(archive.glob(f"*{SUFFIX}"), key=lambda p: int(p.name.split(".")[0])):
        content = json.loads(gzip.decompress(path.read_bytes()))
        job = sweep / content["job"]
        if (job / "metrics.json").exists():
            report["kept"].append(content["job"])
            continue
        for name, text in content["files"].items():
            (job / name).parent.mkdir(parents=True, exist_ok=True)
            (job / name).write_bytes(text.encode())  # byte for byte: CSV rows end in \r\n
        report["restored"].append(content["job"])
    return report
