#!/usr/bin/env bash
# DPO with LoRA vs full fine-tuning from one instruction-tuned start on the embedded world (issue 16's sweep):
# the default SFT run, then `-m stage=dpo peft=lora,full` over three seeds, then the sweep report, written here.
# Part 2 (--rpo): full DPO for 600 steps without and with the NLL term on the chosen answers (dpo.sft_weight),
# report in rpo/. About 12 minutes (part 1) and 50 (part 2) on 2 CPU cores.
# Usage: bash experiments/dpo_sweep/run.sh [work folder, default outputs/dpo_sweep] [--rpo]
set -euo pipefail
cd "$(dirname "$0")/../.."
work=${1:-outputs/dpo_sweep}
export WANDB_MODE=${WANDB_MODE:-offline}
[ -f "$work/sft/summary.json" ] || python train.py logger=none "hydra.run.dir=$work/sft"
if [ "${2:-}" = --rpo ]; then
  python train.py -m logger=none stage=dpo peft=full seed=1,2,3 trainer.max_steps=600 dpo.sft_weight=0,1 \
      "init_from=$work/sft" "hydra.sweep.dir=$work/rpo"
  python -m instructune.cli report "$work/rpo" --out experiments/dpo_sweep/rpo
  exit 0
fi
python train.py -m logger=none stage=dpo peft=lora,full seed=1,2,3 "init_from=$work/sft" "hydra.sweep.dir=$work/sweep"
python -m instructune.cli report "$work/sweep" --out experiments/dpo_sweep
