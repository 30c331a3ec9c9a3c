#!/usr/bin/env bash
# One more draw of the shipped demo model's recipe on this CPU, with its readings: the base
# (`make demo-model`'s training command) under another seed, both fine-tunes from it (the shipped 4 s
# one and the 8 s window, `configs/demo_finetune_window8.yaml`; where `benchmarks/gpu_tokens_pitched` exists,
# also the 4 s one with the kitless pairs, `configs/demo_finetune_kitless.yaml`), each exported with the shipped flags,
# then each scored on the 16 validation chorales (quick 8 s protocol, 4 seeds, bf16) and paired
# against the shipped model's stored run on the same seeds. Two runs of the recipe land up to 0.065
# apart in heard own-context agreement (docs/listening.md), so choosing among draws on the validation
# chorales, then confirming on the test ones, is a lever of its own.
#
#   bash benchmarks/recipe_draw.sh SEED [PRECISION] [VARIANT]   # PRECISION: bf16-mixed (default) or 32-true
#
# VARIANT (optional): a recipe variant layered over the base and every fine-tune, `configs/demo_VARIANT.yaml`
# (e.g. `context_chroma`); its runs and results carry `_VARIANT` in their names. ARMS="w4" limits the fine-tunes
# (w4kb: the kitless pairs as instrument-free examples only, `configs/demo_finetune_kitless_branch.yaml`;
# w4kbs: the same at a tenth of each epoch, `configs/demo_finetune_kitless_branch_share.yaml`; w4kbs05: a twentieth).
#
# Every stage is skipped when its output exists, and the base resumes from its last checkpoint
# (written every 250 steps), so a draw that spans sessions is the same command again. About 70 min
# for the base on a 2-core CPU with native bf16, 5-14 min per fine-tune, 4 min per evaluation.
# Needs the rendered chorales (`stemgen data chorales`) and the training tokens
# (`benchmarks/gpu_tokens`, `benchmarks/gpu_tokens_full`: `make demo-model`'s tokens commands).
# Writes runs/taskmix_seed$SEED{,_fp32}/, runs/finetune_{taskmix,window8,kitless}_seed$SEED.../ (ignored
# by git) and benchmarks/results/listening_{sweep,paired}8_validation_draw_seed$SEED..._{w4,w8,w4k}*.
set -euo pipefail
cd "$(dirname "$0")/.."

seed=${1:?usage: benchmarks/recipe_draw.sh SEED [bf16-mixed|32-true]}
precision=${2:-bf16-mixed}
case "$precision" in
  bf16-mixed) tag=seed$seed ;;
  32-true) tag=seed${seed}_fp32 ;;
  *) echo "recipe_draw.sh: PRECISION must be bf16-mixed or 32-true, not '$precision'" >&2; exit 2 ;;
esac
variant=${3:-}
variant_config=()
if [ -n "$variant" ]; then
  [ -f "configs/demo_$variant.yaml" ] || { echo "recipe_draw.sh: no configs/demo_$variant.yaml" >&2; exit 2; }
  tag=${tag}_$variant
  variant_config=(--config "configs/demo_$variant.yaml")
fi
if [ -n "${ARMS:-}" ]; then
  read -r -a arms <<< "$ARMS"
else
  arms=(w4 w8)
  [ -d benchmarks/gpu_tokens_pitched ] && arms+=(w4k)
fi
# arm NAME: its fine-tune's run folder and its configs over the shipped fine-tune's (`run`, `extra`); fails for an unknown name
arm() {
  case "$1" in
    w4) run=runs/finetune_taskmix_$tag; extra=() ;;
    w8) run=runs/finetune_window8_$tag; extra=(--config configs/demo_finetune_window8.yaml) ;;
    w4k) run=runs/finetune_kitless_$tag; extra=(--config configs/demo_finetune_kitless.yaml) ;;
    w4kb) run=runs/finetune_kitless_branch_$tag; extra=(--config configs/demo_finetune_kitless_branch.yaml) ;;
    w4kbs) run=runs/finetune_kitless_branch_share_$tag
      extra=(--config configs/demo_finetune_kitless_branch.yaml --config configs/demo_finetune_kitless_branch_share.yaml) ;;
    w4kbs05) run=runs/finetune_kitless_branch_share05_$tag
      extra=(--config configs/demo_finetune_kitless_branch.yaml --config configs/demo_finetune_kitless_branch_share.yaml
             --config configs/demo_finetune_kitless_branch_share05.yaml) ;;
    *) return 1 ;;
  esac
}
for window in "${arms[@]}"; do
  arm "$window" || { echo "recipe_draw.sh: ARMS names w4, w8, w4k, w4kb, w4kbs or w4kbs05, not '$window'" >&2; exit 2; }
done
bin=.venv/bin
for need in benchmarks/gpu_tokens benchmarks/gpu_tokens_full; do
  [ -d "$need" ] || { echo "recipe_draw.sh: $need is missing; make it with make demo-model's tokens commands" >&2; exit 2; }
done
seeds=(--seed_everything "$seed" --model.seed "$seed" --data.init_args.seed "$seed" --trainer.precision "$precision")

# the shipped model's stored run on the validation seeds (the context-chroma model since the thirty-ninth session;
# draws before it were paired against `listening_sweep_quick8_validation_shipped_bf16_amx`, the model before it)
shipped_run=benchmarks/results/listening_sweep_quick8_validation_draw_seed0_context_chroma_w4.json
base=runs/taskmix_$tag
if [ ! -f "$base/export/config.json" ]; then
  resume=()
  [ -f "$base/checkpoints/last.ckpt" ] && resume=(--ckpt_path last)
  $bin/stemgen-train --config configs/demo_full_context.yaml --config configs/demo_full_context_7500.yaml \
    --config configs/demo_full_context_taskmix.yaml "${variant_config[@]}" "${seeds[@]}" --trainer.default_root_dir "$base" "${resume[@]}"
  $bin/stemgen export "$base/checkpoints/last.ckpt" "$base/export" --half true
fi

for window in "${arms[@]}"; do
  arm "$window"
  if [ ! -f "$run/export/config.json" ]; then
    rm -rf "$run"
    $bin/stemgen-train --config configs/demo_finetune_candidate.yaml --config configs/demo_finetune_600.yaml "${extra[@]}" "${variant_config[@]}" \
      --model.init_from "$base/export" "${seeds[@]}" --trainer.default_root_dir "$run"
    $bin/stemgen export "$run/checkpoints/last.ckpt" "$run/export" --half true --settings configs/gpu_export_shipped.json
  fi
  result=benchmarks/results/listening_sweep_quick8_validation_draw_${tag}_$window
  # listening.py writes its file before generating: a run cut off mid-way has no `default` arm yet
  if ! $bin/python -c "import json, sys; sys.exit('default' not in json.load(open(sys.argv[1])))" "$result.json" 2>/dev/null; then
    $bin/python benchmarks/listening.py --model "$run/export" --precision bf16 --split validation --seconds 8 \
      --steps 32 16 8 8 --seeds 3600 3700 3800 3900 --only default --out "$result"
  fi
  $bin/python benchmarks/listening_paired.py "$result.json" default \
    "$shipped_run" default \
    --out benchmarks/results/listening_paired8_validation_draw_${tag}_${window}_vs_shipped
  if [ "$window" != w4 ]; then  # w4 runs first: each lever against the same base's shipped fine-tune
    $bin/python benchmarks/listening_paired.py "$result.json" default \
      benchmarks/results/listening_sweep_quick8_validation_draw_${tag}_w4.json default \
      --out benchmarks/results/listening_paired8_validation_draw_${tag}_${window}_vs_w4
  fi
done
