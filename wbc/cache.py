"""On-disk caches shared by concurrent runs: a file lock, atomic writes, and a cached-array helper.

A cache entry is written to a temporary file and renamed into place, so a crashed or concurrent run never
leaves a half-written file behind; a lock makes the second of two runs that start together wait for the first
instead of computing the same entry again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

log = logging.getLogger(__name__)


def digest(*parts: Any) -> str:
    """Short stable hash of JSON-serialisable parts (config values, content keys)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = -1) -> Iterator[None]:
    """Exclusive lock on ``path + '.lock'`` held for the ``with`` block (the ``filelock`` package: portable).

    Waits until the lock is free, or at most ``timeout`` seconds (then TimeoutError naming the lock file, which a
    crashed holder never leaves locked: the operating system releases it with the process)."""
    lock_path = Path(f"{path}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=timeout):
            yield
    except Timeout as err:
        raise TimeoutError(f"{lock_path}: still locked by another run after {timeout} s") from err


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(file)`` on a temporary file in the same folder, then rename it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cached_array(
    path: str | os.PathLike | None,
    compute: Callable[[], tuple[np.ndarray, dict]],
) -> tuple[np.ndarray, dict]:
    """Load ``(array, meta)`` from ``path`` (``.npy`` plus a ``.json`` sidecar), or compute, store and return it.

    The array is memory-mapped read-only, so several DataLoader workers and runs share one copy in the page
    cache. ``path=None`` disables the disk cache.
    """
    if path is None:
        return compute()
    path = Path(path)
    meta_path = path.with_suffix(".json")

    def load() -> tuple[np.ndarray, dict] | None:
        if not (path.exists() and meta_path.exists()):
            return None
        try:
            return np.load(path, mmap_mode="r"), json.loads(meta_path.read_text())
        except (ValueError, OSError, json.JSONDecodeError) as err:
            log.warning("%s: unreadable cache entry (%s); recomputing", path, err)
            return None

    hit = load()
    if hit is not None:
        return hit
    with file_lock(path):
        hit = load()  # another run may have finished it while we waited for the lock
        if hit is not None:
            return hit
        array, meta = compute()
        # The sidecar first: a reader needs both, and the array's arrival marks the entry complete.
        atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=1)), mode="w")
        atomic_write(path, lambda f: np.save(f, np.ascontiguousarray(array)))
    return np.load(path, mmap_mode="r"), meta
