#!/usr/bin/env bash
# The shipped demo model's recipe trained on one GPU (issue 15): one call, about 5 minutes on an H200
# (the task-mix base, 7500 steps, then the 600-step fine-tune; by default), from tokens computed beforehand on a CPU
# machine (checked end to end on a CPU with ACCELERATOR=cpu MINUTES=1 and the audio packages made
# unimportable), so the GPU machine needs only torch, lightning, torchmetrics, numpy, safetensors
# and jsonargparse (LightningCLI's parser; carry it as wheels where it is missing), not soundfile,
# music21 or madmom.
#
#   once, on a CPU machine (about 14 min of 2-core CPU, 15.7 MiB, ignored by git):
#     stemgen data tokens benchmarks/gpu_tokens --codec stemgen/assets/demo_chorales/codec \
#         --root ~/.cache/stemgen/data/chorales_all --crop_seconds 8 --draws 8
#   optionally, transposed re-renderings of the training chorales (8 min + 21 min, 23.6 MiB):
#     stemgen data chorales --out ~/.cache/stemgen/data/chorales_aug --versions '[1,2,3]'
#     stemgen data tokens benchmarks/gpu_tokens_aug --codec stemgen/assets/demo_chorales/codec \
#         --root ~/.cache/stemgen/data/chorales_aug --crop_seconds 8 --draws 4 --seed 1
#   for the full-context recipe (configs/gpu_full_context.yaml, 7 min, 8.0 MiB):
#     stemgen data tokens benchmarks/gpu_tokens_full --data chorales --codec stemgen/assets/demo_chorales/codec \
#         --root ~/.cache/stemgen/data/chorales_all --crop_seconds 8 --draws 4 --full_context 1.0
#   (tokens exported before the thirty-ninth session lack the context chroma codes the shipped recipe reads,
#   configs/demo_context_chroma.yaml: export them again)
#   on the GPU machine (the device tool: carry=["benchmarks/gpu_tokens", "benchmarks/gpu_tokens_full",
#   "benchmarks/gpu_tokens_pitched", ".whl"],
#   .whl holding the jsonargparse wheels), the shipped recipe (the defaults below):
#     OUT=/path/for/results bash benchmarks/gpu_train.sh
#   earlier recipes, one stage each:
#     OUT=... CONFIG=configs/gpu_listening.yaml TOKENS=benchmarks/gpu_tokens FINETUNE= EXPORT_FLAGS= \
#         [EXTRA_TRAIN=benchmarks/gpu_tokens_aug] bash benchmarks/gpu_train.sh
#     OUT=... CONFIG=configs/gpu_full_context.yaml TOKENS=benchmarks/gpu_tokens_full FINETUNE= EXPORT_FLAGS= \
#         EXTRA_TRAIN=benchmarks/gpu_tokens bash benchmarks/gpu_train.sh
#   the shipped demo model's recipe (the task-mix base, then the fine-tune of
#   configs/demo_finetune_candidate.yaml stopped at step 600 by configs/demo_finetune_600.yaml, exported with
#   the shipped sampling defaults; about 5 minutes on one H200, 2026-12-04):
#     OUT=... CONFIG="configs/demo_full_context.yaml configs/demo_full_context_7500.yaml configs/demo_full_context_taskmix.yaml" \
#         TOKENS=benchmarks/gpu_tokens_full FINETUNE="configs/demo_finetune_candidate.yaml configs/demo_finetune_600.yaml" \
#         EXPORT_FLAGS=configs/gpu_export_shipped.json bash benchmarks/gpu_train.sh
#   or several arms side by side and the performance run after them: benchmarks/gpu_all.sh.
#   Size: the device tool carries ignored paths up to 64 MiB in all (the tracked files travel besides):
#   benchmarks/gpu_tokens 20 MiB, gpu_tokens_full 10, gpu_tokens_pitched 10 (measured 2026-12-06) fit
#   together; with the augmented tokens (23.6 MB) they do not: export those with --draws 2 (12 MB).
#
# What lands in $OUT: gpu.txt; train.log; metrics.csv (the learning curve: train/loss, val/loss,
# val/accuracy_level{q}, val/context_gain, val/ce/* at every validation); summary.json (steps,
# minutes, the last validation); model/ (the export, float16, in files of at most 15 MiB:
# config.json, model*.safetensors; its codec is the checkout's stemgen/assets/demo_chorales/codec,
# not copied: put it back as model/codec, or pass codec= to load_model, to evaluate with
# benchmarks/listening.py); with a branch network (BRANCH, below) also branch/, train_branch.log and
# metrics_branch.csv. The checkpoints stay out.
set -u
OUT=${OUT:?set OUT to the folder for the results}
TOKENS=${TOKENS:-benchmarks/gpu_tokens_full}
# one or more configs, space-separated, applied in order (default: the shipped demo model's base)
CONFIG=${CONFIG:-configs/demo_full_context.yaml configs/demo_full_context_7500.yaml configs/demo_full_context_taskmix.yaml configs/demo_context_chroma.yaml}
ARGS=${ARGS:-}  # more command-line options for the run (space-separated), e.g. "--model.dropout 0.1"
FINETUNE_ARGS=${FINETUNE_ARGS:-}  # the same for the fine-tune
# the export's sampling defaults: a JSON file of `stemgen export` options (e.g. configs/gpu_export_shipped.json
# holds the shipped demo model's: nested guidance, a cool level 0, the default); empty: the paper's best
EXPORT_FLAGS=${EXPORT_FLAGS-configs/gpu_export_shipped.json}
EXTRA_TRAIN=${EXTRA_TRAIN:-}  # more token folders whose training examples are added (space-separated)
MINUTES=${MINUTES:-6}
# the shipped demo model's second stage: after the run, fine-tune its export with these configs
# (space-separated, applied in order; configs/demo_finetune_candidate.yaml: the full-context pairs of
# $FINETUNE_TOKENS, 1200 steps; + configs/demo_finetune_600.yaml: stopped at 600) for at most FINETUNE_MINUTES; $OUT/model is then the fine-tuned model and metrics_finetune.csv its curve
FINETUNE=${FINETUNE-configs/demo_finetune_candidate.yaml configs/demo_finetune_600.yaml configs/demo_context_chroma.yaml}
FINETUNE_TOKENS=${FINETUNE_TOKENS:-benchmarks/gpu_tokens_full}
FINETUNE_MINUTES=${FINETUNE_MINUTES:-2}
# the shipped model's instrument-free branch network (docs/listening.md, forty-first session): the same fine-tune
# with these configs added (default: the kitless pairs as instrument-free examples, where their tokens are here:
#   stemgen data tokens benchmarks/gpu_tokens_pitched --data chorales --codec stemgen/assets/demo_chorales/codec \
#       --root ~/.cache/stemgen/data/chorales_all --crop_seconds 8 --draws 4 --full_context 1.0 --pitched_context 1.0
# 10 MiB, 7 min), exported to $OUT/branch; join the two as the shipped model is joined:
#   stemgen ensemble OUT_DIR '["$OUT/model", "$OUT/branch"]' --null_instrument_members '[2]' \
#       --codec stemgen/assets/demo_chorales/codec
# empty: no branch network
BRANCH_DEFAULT=
[ -f benchmarks/gpu_tokens_pitched/tokens.json ] && BRANCH_DEFAULT=configs/demo_finetune_kitless_branch.yaml
BRANCH=${BRANCH-$BRANCH_DEFAULT}
ACCELERATOR=${ACCELERATOR:-gpu}  # cpu: a dry run of the whole pipeline on a CPU machine (MINUTES=1)
# held-out chorales to score the exported model on, on the GPU, before it comes back: an .npz written by
#   python benchmarks/listening.py --split validation --songs 16 --seconds 8 --ce-seconds 8 \
#       --write-songs-file benchmarks/gpu_songs/validation_8s.npz          (10 s, 13.9 MB; ignored by git)
# (the validation split: choosing between runs there leaves the test chorales for reporting); the 8 s
# quick protocol (steps 32 16 8 8, seeds 3600-4300, the model's default) writes listening_validation.json
EVAL_SONGS=${EVAL_SONGS:-}
EVAL_SECONDS=${EVAL_SECONDS:-240}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
if [ "$ACCELERATOR" = gpu ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "no CUDA device: nothing trained (this script is for a GPU machine)" | tee -a "$OUT/gpu.txt"
  exit 1
fi
if [ ! -f "$TOKENS/tokens.json" ]; then
  echo "no tokens in $TOKENS: write them first (see the top of this script)" | tee -a "$OUT/gpu.txt"
  exit 1
fi

EXTRA_ARGS=()
if [ -n "$EXTRA_TRAIN" ]; then
  EXTRA_ARGS=(--data.init_args.extra_train "[$(echo $EXTRA_TRAIN | sed 's/ /,/g')]")
fi
CONFIGS=()
for c in $CONFIG; do CONFIGS+=(--config "$c"); done
EXPORT_ARGS=()
if [ -n "$EXPORT_FLAGS" ]; then EXPORT_ARGS=(--settings "$EXPORT_FLAGS"); fi
RUN=$(mktemp -d)
START=$SECONDS
timeout $((MINUTES * 60 + 120)) $PY -c "from stemgen.train.cli import main; main()" \
  "${CONFIGS[@]}" --data.init_args.root "$TOKENS" "${EXTRA_ARGS[@]}" $ARGS --trainer.default_root_dir "$RUN" \
  --trainer.accelerator "$ACCELERATOR" \
  --trainer.max_time "00:00:$(printf %02d "$MINUTES"):00" >"$OUT/train.log" 2>&1
echo "exit $? after $((SECONDS - START)) s" >>"$OUT/train.log"
TRAIN_SECONDS=$((SECONDS - START))
cp "$RUN"/csv/version_*/metrics.csv "$OUT/metrics.csv" 2>/dev/null
LAST="$RUN/checkpoints/last.ckpt"
if [ -n "$FINETUNE" ]; then
  $PY -c "import sys; from stemgen.cli import main; sys.exit(main(sys.argv[1:]))" \
    export "$LAST" "$RUN/stage1" --half true >>"$OUT/train.log" 2>&1
  START=$SECONDS
  FT_CONFIGS=()
  for c in $FINETUNE; do FT_CONFIGS+=(--config "$c"); done
  timeout $((FINETUNE_MINUTES * 60 + 120)) $PY -c "from stemgen.train.cli import main; main()" \
    "${FT_CONFIGS[@]}" --data.init_args.root "$FINETUNE_TOKENS" $FINETUNE_ARGS --model.init_from "$RUN/stage1" \
    --trainer.default_root_dir "$RUN/finetune" --trainer.accelerator "$ACCELERATOR" \
    --trainer.max_time "00:00:$(printf %02d "$FINETUNE_MINUTES"):00" >"$OUT/train_finetune.log" 2>&1
  echo "exit $? after $((SECONDS - START)) s" >>"$OUT/train_finetune.log"
  cp "$RUN"/finetune/csv/version_*/metrics.csv "$OUT/metrics_finetune.csv" 2>/dev/null
  LAST="$RUN/finetune/checkpoints/last.ckpt"
  if [ -n "$BRANCH" ]; then  # the branch network: the same fine-tune of the same base, with BRANCH's configs
    B_CONFIGS=()
    for c in $BRANCH; do B_CONFIGS+=(--config "$c"); done
    START=$SECONDS
    timeout $((FINETUNE_MINUTES * 60 + 120)) $PY -c "from stemgen.train.cli import main; main()" \
      "${FT_CONFIGS[@]}" "${B_CONFIGS[@]}" --data.init_args.root "$FINETUNE_TOKENS" $FINETUNE_ARGS \
      --model.init_from "$RUN/stage1" --trainer.default_root_dir "$RUN/branch" --trainer.accelerator "$ACCELERATOR" \
      --trainer.max_time "00:00:$(printf %02d "$FINETUNE_MINUTES"):00" >"$OUT/train_branch.log" 2>&1
    echo "exit $? after $((SECONDS - START)) s" >>"$OUT/train_branch.log"
    cp "$RUN"/branch/csv/version_*/metrics.csv "$OUT/metrics_branch.csv" 2>/dev/null
    $PY -c "import sys; from stemgen.cli import main; sys.exit(main(sys.argv[1:]))" \
      export "$RUN/branch/checkpoints/last.ckpt" "$OUT/branch" --half true --max_shard_mib 15 >>"$OUT/train_branch.log" 2>&1
    rm -rf "$OUT/branch/codec"
  fi
fi
$PY -c "import sys; from stemgen.cli import main; sys.exit(main(sys.argv[1:]))" \
  export "$LAST" "$OUT/model" --half true --max_shard_mib 15 "${EXPORT_ARGS[@]}" >>"$OUT/train.log" 2>&1
if [ -n "$EVAL_SONGS" ] && [ -f "$OUT/model/config.json" ]; then
  DEVICE=cuda; [ "$ACCELERATOR" = cpu ] && DEVICE=cpu
  timeout "$EVAL_SECONDS" $PY benchmarks/listening.py --model "$OUT/model" --device $DEVICE --precision fp32 \
    --split validation --songs-file "$EVAL_SONGS" --seconds 8 --ce-seconds 8 --steps ${EVAL_STEPS:-32 16 8 8} \
    --seeds ${EVAL_SEEDS:-3600 3700 3800 3900 4000 4100 4200 4300} --only default \
    --out "$OUT/listening_validation" >"$OUT/listening.log" 2>&1
  echo "exit $?" >>"$OUT/listening.log"
fi
# the bundled codec is the checkout's own (stemgen/assets/demo_chorales/codec, 16.0 MiB): leave the
# copy out; config.json keeps its fingerprint, checked when the model is loaded beside that codec
rm -rf "$OUT/model/codec"
$PY - "$OUT" "$TRAIN_SECONDS" <<'PYEOF' >>"$OUT/train.log" 2>&1
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = list(csv.DictReader(open(out / "metrics.csv"))) if (out / "metrics.csv").exists() else []
val = [{k: float(v) for k, v in r.items() if v and (k.startswith("val/") or k == "step")} for r in rows
       if r.get("val/context_gain")]
steps = max((int(r["step"]) for r in rows if r.get("step")), default=0)
summary = {"steps": steps, "train_seconds": int(sys.argv[2]),
           "seconds_per_step": round(int(sys.argv[2]) / steps, 4) if steps else None,
           "validations": len(val), "last_validation": val[-1] if val else None,
           "finetuned": (out / "metrics_finetune.csv").exists(),
           "branch_exported": (out / "branch" / "config.json").exists(),
           "exported": (out / "model" / "config.json").exists()
                       and any((out / "model").glob("model*.safetensors"))}
listened = out / "listening_validation.json"
if listened.exists():  # the held-out validation chorales' bass, as heard (benchmarks/README.md: listening.py)
    arm = json.loads(listened.read_text()).get("default", {})
    summary["validation_listening"] = {k: arm[k] for k in ("chroma_heard_own", "chroma_heard_gap", "pitch_match",
                                                           "silent_fraction") if k in arm}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary, indent=1))
PYEOF
rm -rf "$RUN"
exit 0
