"""Which modules FSDP shards and recomputes: the model's own transformer blocks, read from the model.

Hugging Face models name their repeated blocks in ``_no_split_modules`` (``GPT2Block``, ``T5Block``,
``LlamaDecoderLayer`` ...; ``post_init`` gathers the names of every sub-model, so the outermost model
holds them all) for ``device_map`` placement. That is exactly FSDP's unit of wrapping and of activation
checkpointing, so one policy serves any architecture instead of a class written into the config.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

from torch import nn
from torch.distributed.fsdp.wrap import _Policy

from instructune.models.loading import ModelError


def block_names(root: nn.Module) -> set[str]:
    """The class names the first (outermost) model under ``root`` declares as unsplittable blocks.
    ``root`` may be the LightningModule, a peft wrapper (it forwards attributes to its base) or an FSDP
    wrapper: each lacks or forwards ``_no_split_modules``, so the walk reaches the Hugging Face model."""
    for module in root.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return set(names)
    return set()


class TransformerBlocks(_Policy):
    """An FSDP policy (``auto_wrap_policy`` and ``activation_checkpointing_policy`` of Lightning's
    ``FSDPStrategy``) selecting every module whose class the model declares as a block, or whose class
    is named in ``blocks`` (for a model that declares none).

    ``trainable_leaves``: in a partly frozen model (peft) each leaf module with a trainable weight (LoRA's
    A and B, a prompt embedding) becomes a unit of its own, as in peft's ``fsdp_auto_wrap_policy``: a
    block unit holding frozen and trainable tensors allocates gradients for all of them (torch warns).
    peft's function needs the model when the config is built; this policy reads it when FSDP wraps.

    Like torch's ``CustomPolicy`` it has no ``__call__``: FSDP and ``apply_activation_checkpointing``
    then both ask ``_run_policy`` (a callable policy would be walked as a recursive predicate instead).
    """

    def __init__(self, blocks: Iterable[str] = (), trainable_leaves: bool = False) -> None:
        self.blocks = tuple(blocks)
        self.trainable_leaves = trainable_leaves

    def _run_policy(self, root_module: nn.Module, ignored_modules: set[nn.Module],
                    root_kwargs: dict[str, Any]) -> dict[nn.Module, dict[str, Any]]:
        names = set(self.blocks) or block_names(root_module)
        if not names:
            raise ModelError(f"trainer=fsdp: a {_model_name(root_module)} model declares no transformer block classes "
                             "(_no_split_modules) to shard and checkpoint by; name them with "
                             "trainer.strategy.auto_wrap_policy.blocks=[<BlockClass>,...]")
        selected = [m for m in root_module.modules() if type(m).__name__ in names]
        if not selected:
            raise ModelError(f"trainer=fsdp: no module of a {_model_name(root_module)} model is a "
                             f"{' or '.join(sorted(names))}; set trainer.strategy.auto_wrap_policy.blocks to its "
                             "block class names")
        if self.trainable_leaves and any(not p.requires_grad for p in root_module.parameters()):
            selected += [m for m in root_module.modules() if next(m.children(), None) is None
                         and isinstance(getattr(m, "weight", None), nn.Parameter) and m.weight.requires_grad]
        return {m: copy.copy(root_kwargs) for m in selected if m not in ignored_modules}

    def __repr__(self) -> str:
        leaves = ", trainable leaves" if self.trainable_leaves else ""
        return f"{type(self).__name__}({', '.join(self.blocks) or '_no_split_modules'}{leaves})"


class CheckpointedBlocks(TransformerBlocks):
    """``TransformerBlocks`` for activation checkpointing, which re-runs each block's forward in the
    backward pass: peft's prefix tuning hands its prefix to the blocks as a key/value cache that each
    forward appends to, so the re-run sees a longer cache and fails deep in the backward pass (the reason
    ``Strategy.enable_gradient_checkpointing`` refuses it too). Refused here in one line instead."""

    def __init__(self, blocks: Iterable[str] = ()) -> None:  # recomputing one small layer saves nothing
        super().__init__(blocks, trainable_leaves=False)

    def _run_policy(self, root_module: nn.Module, ignored_modules: set[nn.Module],
                    root_kwargs: dict[str, Any]) -> dict[nn.Module, dict[str, Any]]:
        if _prefix_tuned(root_module):
            raise ModelError("peft=prefix cannot be combined with activation checkpointing (peft passes the prefix "
                             "as a key/value cache, which recomputation extends twice); set "
                             "trainer.strategy.activation_checkpointing_policy=null or use peft=lora")
        return super()._run_policy(root_module, ignored_modules, root_kwargs)


def _prefix_tuned(root: nn.Module) -> bool:
    for module in root.modules():
        configs = getattr(module, "peft_config", None)  # the PeftModel's {adapter name: config}
        if isinstance(configs, dict):
            return any(getattr(c, "peft_type", None) == "PREFIX_TUNING" for c in configs.values())
    return False


def _model_name(root: nn.Module) -> str:
    """The ``model_type`` of the Hugging Face model under ``root`` (what a user chose), else the root's class."""
    for module in root.modules():
        model_type = getattr(getattr(module, "config", None), "model_type", None)
        if isinstance(model_type, str):
            return model_type
    return type(root).__name__
