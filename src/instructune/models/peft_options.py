"""Any other field of peft's config class, passed through from ``conf/peft/*.yaml`` or ``+peft.<field>=...``
(``use_dora``, ``use_rslora``, ``layers_to_transform``, ...), so a peft feature needs no code here.

The names are checked against the config class's own dataclass fields when the strategy is built, so a typo
is one line that names the key and its close matches, not a ``TypeError`` from inside peft at apply time;
fields instructune already sets under its own name (``alpha`` for ``lora_alpha``) or derives (``task_type``)
are refused with the key to use instead.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from instructune.models.loading import ModelError

# Fields of every peft config that instructune or peft fills in: the key -> why it cannot be set.
DERIVED = {
    "task_type": "instructune sets it from model.architecture",
    "peft_type": "the strategy (peft=<name>) fixes it",
    "fan_in_fan_out": "instructune sets it from the model's layer type (true for GPT-2's Conv1D layers)",
    "base_model_name_or_path": "peft records the base model itself",
    "revision": "peft records the base model itself",
    "auto_mapping": "peft fills it in",
    "peft_version": "peft fills it in",
}


def plain(value: Any) -> Any:
    """OmegaConf lists and dicts (what Hydra passes for ``[a, b]``) as Python ones: peft keeps them as given
    and ``save_pretrained`` cannot write a ``ListConfig`` to adapter_config.json."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def checked_options(cls: type, own: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (keys that are not ``cls``'s own fields) if each is a field of ``cls.peft_config_class``,
    else a one-line ``ModelError`` naming the key."""
    if not options:
        return {}
    import peft

    config = getattr(peft, cls.peft_config_class)
    fields = {f.name for f in dataclasses.fields(config) if f.init}
    renamed: dict[str, str] = cls.renamed_options
    where = f"peft={cls.name}"
    for key in options:
        if key in renamed:
            raise ModelError(f"{where}: set peft.{renamed[key]}, not peft.{key} "
                             f"(instructune's name for {config.__name__}.{key})")
        if key in fields and key in DERIVED:
            raise ModelError(f"{where}: peft.{key} cannot be set: {DERIVED[key]}")
        if key not in fields:
            allowed = sorted(set(own) | (fields - set(renamed) - set(DERIVED)))
            close = difflib.get_close_matches(key, allowed, n=3)
            hint = f"; did you mean {' or '.join(f'peft.{c}' for c in close)}?" if close else ""
            raise ModelError(f"{where}: unknown key peft.{key}: in neither {cls.__name__}'s fields "
                             f"({', '.join(own)}) nor peft's {config.__name__}{hint}")
    return {k: plain(v) for k, v in options.items()}


def accepts_peft_options(cls: type) -> type:
    """Wrap a strategy dataclass's generated ``__init__`` so keywords that are not its own fields are
    checked (``checked_options``) and kept in ``self.options``. The signature gains ``**options``:
    ``instructune.instantiate.build`` binds a node's keys against it before constructing, and Hydra
    composes ``+peft.use_dora=true`` as one more top-level key of the node."""
    generated = cls.__init__
    signature = inspect.signature(generated)
    own = [name for name in signature.parameters if name != "self"]

    @functools.wraps(generated)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        options = {k: kwargs.pop(k) for k in list(kwargs) if k not in own}
        generated(self, *args, **kwargs)
        self.options = checked_options(cls, own, options)

    extra = inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD, annotation=Any)
    parameters = [*signature.parameters.values(), extra]
    __init__.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
    return cls
