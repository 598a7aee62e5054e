"""Fine-tuning strategies: which parameters train. ``full`` and ``bitfit`` are ours; LoRA, prefix,
prompt tuning and IA3 come from the ``peft`` library (peft has no BitFit, so that one is written here).

Each strategy declares what it can do (``uses_virtual_tokens``, ``supports_packing``, ``mergeable``, ...), so
callers ask the strategy instead of comparing names. Default learning rates live in ``conf/peft/*.yaml``
only (prompt / prefix / IA3 train a handful of parameters from scratch and need rates one to two orders of
magnitude above full fine-tuning); code that builds a strategy by hand passes ``lr`` itself or leaves it
``None`` and sets ``optimizer.lr``.

The peft strategies pass any other field of their peft config class through (``+peft.use_dora=true``:
DoRA, ``conf/peft/dora.yaml``), and ``base_quantization`` loads the base in 4 bits (QLoRA,
``conf/peft/qlora.yaml``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from torch import nn

from instructune.models.loading import ModelError, count_parameters, enable_gradient_checkpointing
from instructune.models.peft_options import accepts_peft_options, plain
from instructune.models.quantization import check_quantization, is_quantized, prepare_for_kbit_training

log = logging.getLogger(__name__)


def _task_type(architecture: str) -> Any:
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if architecture == "seq2seq" else TaskType.CAUSAL_LM


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", "unknown"))


@dataclass
class Strategy:
    """Base: ``apply`` returns the model with only the strategy's parameters trainable.

    Capabilities (class-level facts callers read instead of comparing names):
    ``adapter_only`` -- the export is a peft adapter, not a whole model;
    ``uses_virtual_tokens`` -- trained tokens are placed before the prompt (prompt, prefix tuning);
    ``supports_packing`` -- packed rows with restarting positions train correctly;
    ``supports_gradient_checkpointing`` -- activation recomputation keeps the strategy's inputs;
    ``mergeable`` -- the trained weights fold into the base model (``instructune merge``);
    ``supports_quantized_base`` -- trains on a frozen 4-bit base (only new parameters train).

    ``base_quantization`` (``nf4`` in conf/peft/qlora.yaml, else null) is how the base must be loaded:
    ``load_model(..., quantization=strategy.base_quantization)``.
    """

    name: ClassVar[str] = "strategy"
    adapter_only: ClassVar[bool] = False
    uses_virtual_tokens: ClassVar[bool] = False
    supports_packing: ClassVar[bool] = True
    supports_gradient_checkpointing: ClassVar[bool] = True
    mergeable: ClassVar[bool] = False
    supports_quantized_base: ClassVar[bool] = False
    lr: float | None = None  # the default is in conf/peft/<name>.yaml
    base_quantization: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):  # Hydra passes [a, b] as a ListConfig, which peft keeps and cannot save
            setattr(self, f.name, plain(getattr(self, f.name)))
        if self.base_quantization is not None:
            check_quantization(self.base_quantization)
            if not self.supports_quantized_base:
                raise ModelError(f"peft={self.name} trains the base model's own weights, which a 4-bit base cannot "
                                 "update: peft.base_quantization is for adapter strategies (use peft=qlora)")

    @property
    def positions_taken(self) -> int:
        """Positions the strategy occupies before the first real token (virtual tokens): a model with
        absolute positions has that many fewer for the prompt and response."""
        return 0

    def enable_gradient_checkpointing(self, model: nn.Module) -> None:
        """Recompute activations in the backward pass, or say why this strategy cannot."""
        if not self.supports_gradient_checkpointing:
            raise ModelError(
                f"peft={self.name} cannot be combined with gradient checkpointing (peft passes the prefix as a "
                "key/value cache, which checkpointing discards); set model.gradient_checkpointing=false or use peft=lora"
            )
        enable_gradient_checkpointing(model)

    def apply(self, model: nn.Module, architecture: str) -> nn.Module:
        raise NotImplementedError

    def _checked(self, model: nn.Module) -> nn.Module:
        trainable, total = count_parameters(model)
        if trainable == 0:
            raise ModelError(f"peft={self.name} left no trainable parameter in a {_model_type(model)} model")
        log.info("peft=%s: %s trainable of %s parameters (%.4f%%)", self.name, f"{trainable:,}", f"{total:,}",
                 100 * trainable / total)
        return model


@dataclass
class Full(Strategy):
    name: ClassVar[str] = "full"

    def apply(self, model: nn.Module, architecture: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return self._checked(model)


@dataclass
class BitFit(Strategy):
    """Train bias terms only (Ben Zaken et al. 2022). Models without biases are refused, not trained at zero."""

    name: ClassVar[str] = "bitfit"

    def apply(self, model: nn.Module, architecture: str) -> nn.Module:
        biases = [n for n, _ in model.named_parameters() if n.endswith(".bias") or n == "bias"]
        if not biases:
            raise ModelError(
                f"peft=bitfit needs bias terms, and this {_model_type(model)} model has none "
                "(Llama-style and T5 models drop biases); use peft=ia3 or peft=lora, which add few parameters too"
            )
        for n, p in model.named_parameters():
            p.requires_grad_(n in biases)
        return self._checked(model)


@dataclass
class _PeftStrategy(Strategy):
    """A peft method. ``options``: any other field of ``peft_config_class`` (checked by name when the strategy
    is built, see peft_options.py), passed on as given; ``renamed_options``: peft fields set under an
    instructune name, refused under peft's."""

    adapter_only: ClassVar[bool] = True
    supports_quantized_base: ClassVar[bool] = True
    peft_config_class: ClassVar[str] = ""
    renamed_options: ClassVar[dict[str, str]] = {}
    options: dict[str, Any] = field(default_factory=dict, init=False)

    def peft_config(self, architecture: str, model_type: str) -> Any:
        raise NotImplementedError

    def apply(self, model: nn.Module, architecture: str) -> nn.Module:
        """A k-bit base (``load_model(quantization=...)``) is prepared here, not at load: peft's preparation
        freezes the base and upcasts its 16-bit weights for training, which the base evaluation and
        ``instructune generate`` do not want, and it must run before the adapters are added."""
        from peft import get_peft_model

        if self.base_quantization is not None and not is_quantized(model):  # never LoRA on a full base unasked
            raise ModelError(f"peft.base_quantization={self.base_quantization}, but the base model was loaded "
                             "unquantized: load it with load_model(..., quantization=strategy.base_quantization)")
        if is_quantized(model):
            model = prepare_for_kbit_training(model)
        try:
            peft_model = get_peft_model(model, self.peft_config(architecture, _model_type(model)))
        except ValueError as e:
            raise ModelError(f"peft={self.name} on a {_model_type(model)} model: {str(e).splitlines()[0]}") from None
        return self._checked(peft_model)


@accepts_peft_options
@dataclass
class LoRA(_PeftStrategy):
    """Low-rank adapters (Hu et al. 2021). ``target_modules=None`` takes peft's per-architecture
    default (GPT-2: c_attn; Llama: q_proj, v_proj; T5: q, v); ``"all-linear"`` every linear layer but the
    LM head. DoRA (magnitude vectors, merged by peft like LoRA) and QLoRA (on a 4-bit base) are LoRA
    with ``use_dora`` / ``base_quantization`` set."""

    name: ClassVar[str] = "lora"
    mergeable: ClassVar[bool] = True
    peft_config_class: ClassVar[str] = "LoraConfig"
    renamed_options: ClassVar[dict[str, str]] = {"lora_alpha": "alpha", "lora_dropout": "dropout"}
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | str | None = None

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import LoraConfig

        # GPT-2 stores Linear layers transposed (Conv1D); peft's 4-bit layers ignore this (bitsandbytes
        # loads them as Linear4bit, untransposed)
        return LoraConfig(task_type=_task_type(architecture), r=self.r, lora_alpha=self.alpha,
                          lora_dropout=self.dropout, target_modules=self.target_modules,
                          fan_in_fan_out=model_type == "gpt2", **self.options)


@accepts_peft_options
@dataclass
class IA3(_PeftStrategy):
    """(IA)^3 rescaling vectors (Liu et al. 2022, T-Few); peft's defaults pick keys, values and the FFN."""

    name: ClassVar[str] = "ia3"
    mergeable: ClassVar[bool] = True
    peft_config_class: ClassVar[str] = "IA3Config"
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import IA3Config

        return IA3Config(task_type=_task_type(architecture), target_modules=self.target_modules,
                         feedforward_modules=self.feedforward_modules, fan_in_fan_out=model_type == "gpt2",
                         **self.options)


@dataclass
class _VirtualTokens(_PeftStrategy):
    """Virtual tokens shift every position of a row, so packed rows (restarting positions) cannot hold them."""

    uses_virtual_tokens: ClassVar[bool] = True
    supports_packing: ClassVar[bool] = False
    num_virtual_tokens: int = 20

    @property
    def positions_taken(self) -> int:
        return self.num_virtual_tokens

    def _check_tokens(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ModelError(f"peft={self.name} needs num_virtual_tokens >= 1, got {self.num_virtual_tokens}")


@accepts_peft_options
@dataclass
class Prefix(_VirtualTokens):
    """Prefix tuning (Li & Liang 2021): trained key/value prefixes in every layer."""

    name: ClassVar[str] = "prefix"
    peft_config_class: ClassVar[str] = "PrefixTuningConfig"
    supports_gradient_checkpointing: ClassVar[bool] = False
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import PrefixTuningConfig

        self._check_tokens()
        extra = {"encoder_hidden_size": self.encoder_hidden_size} if self.encoder_hidden_size else {}
        return PrefixTuningConfig(task_type=_task_type(architecture), num_virtual_tokens=self.num_virtual_tokens,
                                  prefix_projection=self.prefix_projection, **extra, **self.options)


@accepts_peft_options
@dataclass
class Prompt(_VirtualTokens):
    """Prompt tuning (Lester et al. 2021): trained input embeddings only. ``init`` is peft's
    ``prompt_tuning_init`` (RANDOM; SAMPLE_VOCAB: rows of the model's own embedding matrix; TEXT: the embeddings
    of ``+peft.prompt_tuning_init_text``, tokenised by ``+peft.tokenizer_name_or_path``)."""

    name: ClassVar[str] = "prompt"
    peft_config_class: ClassVar[str] = "PromptTuningConfig"
    renamed_options: ClassVar[dict[str, str]] = {"prompt_tuning_init": "init"}
    init: str = "SAMPLE_VOCAB"

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        self._check_tokens()
        return PromptTuningConfig(task_type=_task_type(architecture), num_virtual_tokens=self.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit[self.init], **self.options)


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Full, BitFit, LoRA, IA3, Prefix, Prompt)}


__all__ = ["Strategy", "Full", "BitFit", "LoRA", "IA3", "Prefix", "Prompt", "STRATEGIES"]
