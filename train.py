"""Instruction-tune a model: `python train.py [group=option ...] [key=value ...]`, or `-m` to sweep.

    python train.py                                   # embedded world, its GPT-2 base, LoRA, masking on
    python train.py -m peft=lora,ia3 masking=true,false

The same application is installed as `instructune train ...` (see instructune/entry.py).
"""

from instructune.entry import train_app

if __name__ == "__main__":
    train_app()
