"""Mistakes a user fixes (a missing setting, a wrong path, a class mapping that maps nothing, no network): the
commands print the message alone, one line that says what to do, and exit with status 2; no traceback.

Raise :class:`UserError` (or a subclass) where such a mistake is found. The entry points wrap their work in
:func:`reported_errors`, which also finds a UserError that Hydra's ``instantiate`` wrapped in its own exception,
and turns a required setting left at ``???`` into the same kind of line.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator

from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

log = logging.getLogger("wbc")

USAGE_ERROR = 2  # the exit status of a command stopped by a UserError


class UserError(Exception):
    """A mistake in the command, the config or the data; its message says what to do, in one line."""


def _chain(err: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__


def explain(err: BaseException) -> str | None:
    """The one line to show for ``err``, or None when it is not a user's mistake (a bug: keep the traceback)."""
    for cause in _chain(err):
        if isinstance(cause, UserError):
            return " ".join(str(cause).split())
    for cause in _chain(err):
        if isinstance(cause, OmegaConfBaseException):
            missing = re.search(r"Missing mandatory value: ?([\w.\[\]]+)", str(cause))
            if missing or isinstance(cause, MissingMandatoryValue):
                key = missing.group(1) if missing else getattr(cause, "full_key", "") or "a setting"
                return f"{key} is required (it is ??? in the config): add {key}=... to the command line"
    return None


@contextlib.contextmanager
def reported_errors() -> Iterator[None]:
    """Run a command's body: a user's mistake ends it with its one-line message and exit status 2."""
    try:
        yield
    except Exception as err:
        message = explain(err)
        if message is None:
            raise
        log.error("%s", message)
        raise SystemExit(USAGE_ERROR) from None
