"""The SR methods, in one registry: every list of methods elsewhere (the stage, the comparison's order, the
networks, the tests) derives from it.

Two kinds of method:

- **plain** (``none``, ``bicubic``): an interpolation from S/f back to S; nothing to train, nothing to cache but
  the images it produces. Registered with :func:`register_plain`.
- **learned** (``espcn``, ``edsr``, ``fsrcnn``): a ``torch.nn.Module`` class registered with :func:`register_network`.
  The contract such a class meets, and all the framework needs from it:

  * ``__init__(self, scale: int, **arch)``: ``scale`` an integer >= 2 (raise ``ValueError`` for a scale it cannot
    do); ``arch`` the keyword arguments of ``conf/sr/<name>.yaml``'s ``arch`` node; it sets ``self.scale``.
  * ``forward``: float NCHW RGB in [0, 1] at h x w -> float NCHW at (scale h) x (scale w), unclamped (callers clamp).
  * How it is trained: in-domain, by :func:`wbc.sr.training.train_sr` (the same loop for every network: random
    patch pairs of the training split, L1 or L1 + task loss, ``conf/sr/train/default.yaml``), on first use.
  * How it is cached: its trained weights under ``paths.cache_dir/sr/<name>-x<f>-<key>.pt``, keyed by dataset,
    split, scale, ``arch`` and training settings (:meth:`wbc.sr.stage.SuperResolver.prepare`); images it produced
    under the datamodule's cache, keyed by a digest of those weights (``cache_token``).
  * Checkpoints and export: its ``state_dict`` and ``arch`` travel inside the classifier's checkpoint; ONNX and
    torch.export trace it as part of the pipeline, so forward must be traceable (no data-dependent Python control).
  * The OpenCV backend (``sr.backend=opencv``) loads a ``.pb`` of the same name when OpenCV has one
    (:data:`wbc.sr.opencv_backend.OPENCV_SR_NAMES`).

Adding a method: one registered class (in :mod:`wbc.sr.models` or a module it imports) and one
``conf/sr/<name>.yaml`` with ``method: <name>``; the tests iterate the registry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class SRMethod:
    name: str
    interpolation: str | None = None  # plain methods: the cv2 interpolation (bilinear, bicubic)
    network: type[nn.Module] | None = None  # learned methods: the network class

    @property
    def learned(self) -> bool:
        return self.network is not None


SR_METHODS: dict[str, SRMethod] = {}  # in registration order: the order of tables and figures


def _add(method: SRMethod) -> None:
    if method.name in SR_METHODS:
        raise ValueError(f"SR method {method.name!r} is registered twice")
    SR_METHODS[method.name] = method


def register_plain(name: str, interpolation: str) -> None:
    _add(SRMethod(name, interpolation=interpolation))


def register_network(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register_network("espcn") class ESPCN(nn.Module): ...``"""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _add(SRMethod(name, network=cls))
        return cls

    return add


def get_method(name: str) -> SRMethod:
    _load_networks()
    try:
        return SR_METHODS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown sr method {name!r}; known: {', '.join(SR_METHODS)}") from None


def method_names(learned: bool | None = None) -> list[str]:
    """Registered method names in registration order; ``learned=True/False`` keeps one kind."""
    _load_networks()
    return [n for n, m in SR_METHODS.items() if learned is None or m.learned == learned]


def _load_networks() -> None:
    import wbc.sr.models  # noqa: F401  (registers the networks on import)


register_plain("none", "bilinear")  # the plain resize a user without SR would do
register_plain("bicubic", "bicubic")  # the classic SR baseline
