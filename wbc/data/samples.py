"""What a data source yields: one labelled image with a stable identity of its content."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One image of a source.

    ``key`` identifies the content (the hash of a file's bytes, or the generator seed of a synthetic image):
    samples with equal keys are the same image, which the splitter keeps on one side.
    ``split`` is set when the source's layout fixes it (``train/``, ``val/``, ``test/`` folders), else None.
    """

    path: str
    label: int
    key: str
    split: str | None = None
