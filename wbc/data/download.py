"""Download a data file once: streamed to a temporary file, checked against its MD5, then renamed into place.

A lock beside the destination (``<dest>.lock``, removed when the download ends, whether it worked or not) makes
concurrent runs (a sweep's first jobs, DDP ranks) wait for the one that downloads instead of fetching the same file
again. A failed or corrupt download leaves nothing behind, and every error says where to put the file by hand
(machines without internet access) in one line.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from wbc.cache import atomic_write
from wbc.errors import UserError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PROGRESS_EVERY = 256 << 20  # log progress of large files (BloodMNIST at 224 px is 1.4 GB)

# What a failing fetch raises: URLError/HTTPError and timeouts are OSErrors, a truncated body is an
# HTTPException, an unknown URL scheme is a ValueError.
FETCH_ERRORS = (OSError, http.client.HTTPException, ValueError)


class DownloadError(UserError, RuntimeError):
    """A file could not be downloaded, or what arrived is not the expected file; the message says where to put
    the file by hand."""


@contextlib.contextmanager
def download_lock(dest: Path) -> Iterator[None]:
    """Exclusive lock on ``<dest>.lock`` for the ``with`` block; the lock file is removed on release.

    It is removed while still locked, so a process that was waiting on it wakes up holding a lock on a file that
    is no longer at that path: it sees this (another inode, or none, at the path) and locks again. So no lock
    file is left behind and two processes never hold the lock at once.
    """
    lock_path = Path(f"{dest}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(lock_path, "a")  # noqa: SIM115 (held open for the whole block)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                locked_current_file = os.path.samestat(os.stat(lock_path), os.fstat(handle.fileno()))
            except FileNotFoundError:
                locked_current_file = False
        except BaseException:
            handle.close()
            raise
        if locked_current_file:
            break
        handle.close()
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        handle.close()  # releases the lock


def md5sum(path: str | os.PathLike) -> str:
    """MD5 hex digest of a file, read in blocks."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def manual_instructions(url: str, dest: Path, page: str | None = None) -> str:
    """How to provide the file by hand."""
    where = url if page is None else f"{url} (listed on {page})"
    return f"download it by other means from {where} and put it at {dest}"


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def download(url: str, dest: str | os.PathLike, md5: str, timeout: float = 60, page: str | None = None) -> Path:
    """Fetch ``url`` (https, http or file) to ``dest`` and verify its MD5; return ``dest``.

    An existing ``dest`` is returned as it is: it is either what another process has just downloaded and
    verified while this one waited for the lock, or a file the caller chose to trust. ``page`` is a human-facing
    page to mention in errors (where else to find the file). Raises DownloadError.
    """
    dest = Path(dest).expanduser().absolute()
    manual = manual_instructions(url, dest, page)

    def fetch(f: BinaryIO) -> None:
        h, done = hashlib.md5(), 0
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                for block in iter(lambda: response.read(CHUNK), b""):
                    h.update(block)
                    f.write(block)
                    done += len(block)
                    if done // PROGRESS_EVERY != (done - len(block)) // PROGRESS_EVERY:
                        log.info("%s: %d MB", dest.name, done >> 20)
        except FETCH_ERRORS as err:
            raise DownloadError(f"downloading {url} failed ({_reason(err)}): {manual}") from err
        if h.hexdigest() != md5:
            # Raised inside atomic_write: the temporary file is deleted, so no bad file is ever kept.
            raise DownloadError(
                f"{url}: expected md5 {md5}, got {h.hexdigest()} ({done} bytes); the downloaded file was "
                f"discarded. Retry later, or {manual}"
            )

    with download_lock(dest):
        if dest.exists():
            return dest
        log.info("downloading %s -> %s", url, dest)
        atomic_write(dest, fetch)
        log.info("downloaded %s (%d MB, md5 ok)", dest, dest.stat().st_size >> 20)
    return dest
