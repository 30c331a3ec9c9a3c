#!/usr/bin/env bash
# Everything a short GPU slot is for, as one call of at most 10 minutes on one H100/H200: the
# listening arms of issue 15 trained side by side on the one GPU (each arm a benchmarks/gpu_train.sh
# run; the small model leaves the GPU mostly idle, so several share it), then the performance
# measurements of issue 16 (benchmarks/gpu_session.sh) in the time that is left before DEADLINE
# seconds.
#
#     OUT=/path/for/results [ARMS=benchmarks/gpu_arms_taskmix.txt] [MINUTES=5] bash benchmarks/gpu_all.sh
#
# ARMS: a file of arms, one per line: a name, then the environment of its gpu_train.sh run
# (benchmarks/gpu_arms_taskmix.txt). MINUTES: each arm's training time limit (a guard: an arm
# should end by its max_steps well before it). Needs the token folders (the commands at the top of
# benchmarks/gpu_train.sh) and, where the machine lacks it, jsonargparse (LightningCLI's parser) on
# PYTHONPATH (carried as wheels: benchmarks/README.md). What lands in $OUT: one folder per arm
# (gpu_train.sh's files: train.log, metrics.csv, summary.json, model/), perf/ (gpu_session.sh's),
# timeline.txt. With PACK=1 each arm is put into a tar archive cut into files of 15 MiB as soon as it
# ends ($OUT/NAME.tar.aa, .ab, ...: `cat NAME.tar.* | tar x`), and the rest into results.tar.*, for a
# transport that takes few files.
# PERF=0 leaves the performance part out; EVAL_SONGS (gpu_train.sh's) scores every arm on the validation
# chorales before it is packed.
set -u
OUT=${OUT:?set OUT to the folder for the results}
DEADLINE=${DEADLINE:-560}
ARMS=${ARMS:-benchmarks/gpu_arms_taskmix.txt}
cd "$(dirname "$0")/.."
DEST=$OUT
[ "${PACK:-0}" = 1 ] && DEST=$(mktemp -d)
mkdir -p "$DEST" "$OUT"
PIDS=()
while read -r name env; do
  case "$name" in ''|'#'*) continue ;; esac
  (eval "export $env"; OUT=$DEST/$name bash benchmarks/gpu_train.sh >"$DEST/$name.out" 2>&1
   # packed as soon as it ends, so that a call cut short still returns the arms that finished
   if [ "$DEST" != "$OUT" ]; then
     rm -rf "$DEST/$name/model/codec"
     tar cf - -C "$DEST" "$name" "$name.out" | split -b 15M - "$OUT/$name.tar." && rm -rf "$DEST/$name" "$DEST/$name.out"
   fi) &
  PIDS+=($!)
  echo "arm $name started at $SECONDS s" | tee -a "$DEST/timeline.txt"
done <"$ARMS"
wait "${PIDS[@]}"
echo "arms done at $SECONDS s" | tee -a "$DEST/timeline.txt"
LEFT=$((DEADLINE - SECONDS))
if [ "${PERF:-1}" = 1 ] && [ $LEFT -gt 100 ]; then
  OUT=$DEST/perf T_TESTS=30 T_TRAIN=85 T_SAMPLE=$((LEFT - 125)) timeout $LEFT bash benchmarks/gpu_session.sh
fi
echo "perf done at $SECONDS s" | tee -a "$DEST/timeline.txt"
for s in "$DEST"/*/summary.json; do echo "$s"; cat "$s"; done 2>/dev/null
if [ "$DEST" != "$OUT" ]; then
  mkdir -p "$OUT"
  tar cf - -C "$DEST" . | split -b 15M - "$OUT/results.tar."
  rm -rf "$DEST"
fi
exit 0
