"""Stage one of the data's trip: records → prompts → tokens → batches. Knows nothing of models."""

from instructune.data.collate import CausalCollator, Seq2SeqCollator
from instructune.data.datamodule import InstructionDataModule
from instructune.data.prompts import PromptStyle, make_prompt_style
from instructune.data.records import DataError, DatasetSource, FieldMap, InlineSource, SplitFractions

__all__ = [
    "CausalCollator", "Seq2SeqCollator", "InstructionDataModule",
    "PromptStyle", "make_prompt_style", "DataError", "DatasetSource", "FieldMap", "InlineSource", "SplitFractions",
]
