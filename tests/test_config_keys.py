"""No dead configuration: every key that conf/ can put in a composed config is read by something.

A key is read when it is a parameter of its node's ``_target_`` (Hydra passes it there), when another key
interpolates it (``${data.root}``), or when the code names it (``cfg.seed``, ``cfg.get("tags")``,
``sr_cfg["weights"]``). Each option of each group is composed on its own, over the defaults.
"""

import inspect
import re

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from tests.helpers import CONF_DIR, REPO_ROOT

CODE = (
    "\n".join(
        p.read_text() for folder in ("wbc", "scripts", "benchmarks") for p in sorted((REPO_ROOT / folder).rglob("*.py"))
    )
    + (REPO_ROOT / "train.py").read_text()
    + (REPO_ROOT / "predict.py").read_text()
)
INTERPOLATED = set(
    re.findall(r"\$\{[^}:]*?([A-Za-z_]\w*)\}", "\n".join(p.read_text() for p in CONF_DIR.rglob("*.yaml")))
)
GROUPS = ("data", "sr", "model", "trainer", "logger", "callbacks", "debug", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def composed(config_name: str, overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        return compose(config_name=config_name, overrides=overrides)


def target_parameters(target: str) -> set[str] | None:
    """The keyword parameters of a ``_target_`` (None: it takes **kwargs, so any key may be read)."""
    fn = get_method(target)
    fn = fn.__init__ if inspect.isclass(fn) else fn
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params}


def unread_keys(node, path: str = "", kwargs: bool = False) -> list[str]:
    """Dotted paths of the keys under ``node`` that nothing reads. ``kwargs``: ``node`` is a mapping a
    ``_target_`` receives whole and passes on as keyword arguments (model.net, sr.arch): its keys are read
    when the code has a parameter of that name."""
    found = []
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found += unread_keys(item, f"{path}[{i}]")
        return found
    if not isinstance(node, DictConfig):
        return found
    target = node.get("_target_") if "_target_" in node else None
    accepted = target_parameters(target) if target else set()
    children = [node._get_node(k) for k in node.keys()]
    named = (
        not target
        and len(node) > 0
        and all(  # a mapping of named objects (data.augment): names, not keys
            c._is_none() or (isinstance(c, DictConfig) and "_target_" in c) for c in children
        )
    )
    for key in node.keys():
        if str(key).startswith("_"):
            continue
        if named or key in INTERPOLATED:
            read = True
        elif target:
            read = accepted is None or key in accepted
        else:
            pattern = rf"\b{key}\b" if kwargs else rf"""(\.{key}\b|["']{key}["'])"""
            read = re.search(pattern, CODE) is not None
        if not read:
            found.append(f"{path}{key}")
        child = node._get_node(key)
        if isinstance(child, DictConfig | ListConfig) and not OmegaConf.is_missing(node, key):
            found += unread_keys(child, f"{path}{key}.", kwargs=bool(target) and isinstance(child, DictConfig))
    return found


# Every option of every group at least once, several groups per composition (composing takes a second or two).
WIDEST = max(len(options(group)) for group in GROUPS)
CASES = [("train", [f"{g}={options(g)[i % len(options(g))]}" for g in GROUPS]) for i in range(WIDEST)]
CASES += [("predict", []), ("cross_dataset", []), ("train", ["hparams_search=optuna"])]


@pytest.mark.parametrize(("config_name", "overrides"), CASES, ids=[f"{c}-{i}" for i, (c, _) in enumerate(CASES)])
def test_every_key_is_read(config_name, overrides):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper") if "hparams_search=optuna" in overrides else None
    cfg = composed(config_name, overrides)
    assert unread_keys(cfg) == []


def test_the_check_finds_a_dead_key():
    cfg = OmegaConf.create({"seed": 0, "no_code_reads_this_key": 1, "sr": {"_target_": "wbc.sr.stage.SuperResolver",
                                                                           "scale": 2, "colour": "red"}})  # fmt: skip
    assert unread_keys(cfg) == ["no_code_reads_this_key", "sr.colour"]
    cfg.sr.arch = {"n_feats": 8, "no_parameter_has_this_name": 1}
    assert unread_keys(cfg) == ["no_code_reads_this_key", "sr.colour", "sr.arch.no_parameter_has_this_name"]
