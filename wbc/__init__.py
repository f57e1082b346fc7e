"""White blood cell classification with an optional super-resolution stage."""

import os

# albumentations otherwise checks PyPI for a newer release at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

__version__ = "0.1.0"
