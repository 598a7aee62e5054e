"""Instruction-tune a model: `python train.py [group=option ...] [key=value ...]`, or `-m` to sweep.

    python train.py                                   # embedded world, its GPT-2 base, LoRA, masking on
    python train.py -m peft=lora,ia3 masking=true,false
"""

import hydra
from omegaconf import DictConfig

from instructune.entry import main_job, prepare

prepare()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return main_job(cfg)


if __name__ == "__main__":
    main()
