"""White blood cell classification with an optional super-resolution stage."""

import os

from omegaconf import OmegaConf

# albumentations otherwise checks PyPI for a newer release at import time.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# ${pid:} in run folder names: two runs started in the same second get different folders.
OmegaConf.register_new_resolver("pid", os.getpid, replace=True, use_cache=True)


def on_gpu(device, gpu_value, cpu_value):
    """``${on_gpu:<device>,<value on a GPU>,<value on a CPU>}``: the first value when ``device`` is a CUDA device
    (``auto``: when one is present), else the second. conf/sr/edsr.yaml sizes the default EDSR with it."""
    device = str(device)
    if device == "auto":
        import torch

        gpu = torch.cuda.is_available()
    else:
        gpu = device.startswith("cuda")
    return gpu_value if gpu else cpu_value


OmegaConf.register_new_resolver("on_gpu", on_gpu, replace=True)

__version__ = "0.1.0"
