"""Config nodes into objects: ``hydra.utils.instantiate`` with runtime objects passed as they are and
errors as one line naming the node."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from instructune.config_check import ConfigError


def build(node: DictConfig | dict[str, Any], what: str, drop: tuple[str, ...] = (), **runtime: Any) -> Any:
    """Build a ``_target_`` node with ``hydra.utils.instantiate``; ``runtime`` objects (model, tokenizer,
    loggers) are passed to the constructor as they are, never copied into the config. Errors become one
    line naming the node. ``drop``: keys that label a node or feed interpolations, no arguments."""
    import inspect

    from hydra.errors import InstantiationException

    if drop:  # resolved first: the interpolations point outside the node
        node = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in drop}
    try:
        factory = instantiate(node, _partial_=True)
    except InstantiationException as e:
        cause: BaseException = e
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, ValueError) and not isinstance(cause, InstantiationException):
            raise cause from None  # our own clear errors (DataError, ModelError) pass through
        raise ConfigError(f"{what}: {str(cause).splitlines()[0]}") from None
    try:
        inspect.signature(factory.func).bind(*factory.args, **{**factory.keywords, **runtime})
    except TypeError as e:  # a key the constructor does not take, or a missing one
        func = factory.func
        name = f"{func.__qualname__}.__init__" if isinstance(func, type) else func.__qualname__
        raise ConfigError(f"{what}: {name}() {e}") from None
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return factory(**runtime)
    except MisconfigurationException as e:  # e.g. trainer=gpu on a machine without one: Lightning's own words
        raise ConfigError(f"{what}: {str(e).splitlines()[0]}") from None
