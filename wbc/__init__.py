"""White blood cell classification with an optional super-resolution stage."""

import os

from omegaconf import OmegaConf

# albumentations otherwise checks PyPI for a newer release at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# ${pid:} in run folder names: two runs started in the same second get different folders.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)

__version__ = "0.1.0"
