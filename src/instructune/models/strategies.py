"""Fine-tuning strategies: which parameters train. ``full`` and ``bitfit`` are ours; LoRA, prefix,
prompt tuning and IA3 come from the ``peft`` library (peft has no BitFit, so that one is written here).

Each strategy carries its own default learning rate: prompt / prefix / IA3 train a handful of
parameters from scratch and need rates one to two orders of magnitude above full fine-tuning.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import nn

from instructune.models.loading import ModelError, count_parameters

log = logging.getLogger(__name__)


def _task_type(architecture: str) -> Any:
    from peft import TaskType

    return TaskType.SEQ_2_SEQ_LM if architecture == "seq2seq" else TaskType.CAUSAL_LM


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", "unknown"))


@dataclass
class Strategy:
    """Base: ``apply`` returns the model with only the strategy's parameters trainable."""

    name: ClassVar[str] = "strategy"
    lr: float = 1e-4

    @property
    def is_peft(self) -> bool:
        return False

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
    lr: float = 1e-4

    def apply(self, model: nn.Module, architecture: str) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return self._checked(model)


@dataclass
class BitFit(Strategy):
    """Train bias terms only (Ben Zaken et al. 2022). Models without biases are refused, not trained at zero."""

    name: ClassVar[str] = "bitfit"
    lr: float = 1e-3

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
    @property
    def is_peft(self) -> bool:
        return True

    def peft_config(self, architecture: str, model_type: str) -> Any:
        raise NotImplementedError

    def apply(self, model: nn.Module, architecture: str) -> nn.Module:
        from peft import get_peft_model

        try:
            peft_model = get_peft_model(model, self.peft_config(architecture, _model_type(model)))
        except ValueError as e:
            raise ModelError(f"peft={self.name} on a {_model_type(model)} model: {str(e).splitlines()[0]}") from None
        return self._checked(peft_model)


@dataclass
class LoRA(_PeftStrategy):
    """Low-rank adapters (Hu et al. 2021). ``target_modules=None`` takes peft's per-architecture
    default (GPT-2: c_attn; Llama: q_proj, v_proj; T5: q, v)."""

    name: ClassVar[str] = "lora"
    lr: float = 1e-3
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import LoraConfig

        return LoraConfig(task_type=_task_type(architecture), r=self.r, lora_alpha=self.alpha,
                          lora_dropout=self.dropout, target_modules=self.target_modules,
                          fan_in_fan_out=model_type == "gpt2")  # GPT-2 stores Linear layers transposed (Conv1D)


@dataclass
class IA3(_PeftStrategy):
    """(IA)^3 rescaling vectors (Liu et al. 2022, T-Few); peft's defaults pick keys, values and the FFN."""

    name: ClassVar[str] = "ia3"
    lr: float = 1e-2
    target_modules: list[str] | None = None
    feedforward_modules: list[str] | None = None

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import IA3Config

        return IA3Config(task_type=_task_type(architecture), target_modules=self.target_modules,
                         feedforward_modules=self.feedforward_modules, fan_in_fan_out=model_type == "gpt2")


@dataclass
class _VirtualTokens(_PeftStrategy):
    num_virtual_tokens: int = 20

    def _check_tokens(self) -> None:
        if self.num_virtual_tokens < 1:
            raise ModelError(f"peft={self.name} needs num_virtual_tokens >= 1, got {self.num_virtual_tokens}")


@dataclass
class Prefix(_VirtualTokens):
    """Prefix tuning (Li & Liang 2021): trained key/value prefixes in every layer."""

    name: ClassVar[str] = "prefix"
    lr: float = 1e-2
    prefix_projection: bool = False
    encoder_hidden_size: int | None = None

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import PrefixTuningConfig

        self._check_tokens()
        extra = {"encoder_hidden_size": self.encoder_hidden_size} if self.encoder_hidden_size else {}
        return PrefixTuningConfig(task_type=_task_type(architecture), num_virtual_tokens=self.num_virtual_tokens,
                                  prefix_projection=self.prefix_projection, **extra)


@dataclass
class Prompt(_VirtualTokens):
    """Prompt tuning (Lester et al. 2021): trained input embeddings only. ``init`` is peft's
    ``prompt_tuning_init`` (RANDOM or SAMPLE_VOCAB: rows of the model's own embedding matrix)."""

    name: ClassVar[str] = "prompt"
    lr: float = 3e-2
    init: str = "SAMPLE_VOCAB"

    def peft_config(self, architecture: str, model_type: str) -> Any:
        from peft import PromptTuningConfig, PromptTuningInit

        self._check_tokens()
        return PromptTuningConfig(task_type=_task_type(architecture), num_virtual_tokens=self.num_virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit[self.init])


STRATEGIES: dict[str, type[Strategy]] = {cls.name: cls for cls in (Full, BitFit, LoRA, IA3, Prefix, Prompt)}


def make_strategy(name: str, **params: Any) -> Strategy:
    """Build a strategy by name, with a clear error for unknown names and options."""
    if name not in STRATEGIES:
        raise ModelError(f"unknown peft strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    cls = STRATEGIES[name]
    try:
        return cls(**params)
    except TypeError as e:
        raise ModelError(f"peft={name}: {e}") from None


__all__ = ["Strategy", "Full", "BitFit", "LoRA", "IA3", "Prefix", "Prompt", "STRATEGIES", "make_strategy"]
