#!/usr/bin/env bash
# Everything a short GPU slot is for, as one call of at most 10 minutes on one H100/H200: the
# listening arms of issue 15 trained side by side on the one GPU (5 minutes each, at the same
# time, so they share it equally: `base` from benchmarks/gpu_tokens, `aug` with the transposed
# versions in benchmarks/gpu_tokens_aug added), then the performance measurements of issue 16
# (benchmarks/gpu_session.sh) in the time that is left before DEADLINE seconds.
#
#     OUT=/path/for/results bash benchmarks/gpu_all.sh
#
# Needs the token folders (the commands at the top of benchmarks/gpu_train.sh) and, where the
# machine lacks it, jsonargparse (LightningCLI's parser) on PYTHONPATH. What lands in $OUT:
# base/ and aug/ (gpu_train.sh's files: train.log, metrics.csv, summary.json, model/), perf/
# (gpu_session.sh's), timeline.txt. With PACK=1 everything is put into one tar archive cut into
# files of 15 MiB instead ($OUT/results.tar.aa, .ab, ...: `cat results.tar.* | tar x`), for a
# transport that takes few files.
set -u
OUT=${OUT:?set OUT to the folder for the results}
DEADLINE=${DEADLINE:-560}
cd "$(dirname "$0")/.."
DEST=$OUT
[ "${PACK:-0}" = 1 ] && DEST=$(mktemp -d)
mkdir -p "$DEST"
(OUT=$DEST/base bash benchmarks/gpu_train.sh >"$DEST/base.out" 2>&1) & P1=$!
if [ -f benchmarks/gpu_tokens_aug/tokens.json ]; then
  (OUT=$DEST/aug EXTRA_TRAIN=benchmarks/gpu_tokens_aug bash benchmarks/gpu_train.sh >"$DEST/aug.out" 2>&1) & P2=$!
else
  P2=
fi
wait $P1 $P2
echo "arms done at $SECONDS s" | tee "$DEST/timeline.txt"
LEFT=$((DEADLINE - SECONDS))
if [ $LEFT -gt 100 ]; then
  OUT=$DEST/perf T_TESTS=30 T_TRAIN=85 T_SAMPLE=$((LEFT - 125)) timeout $LEFT bash benchmarks/gpu_session.sh
fi
echo "perf done at $SECONDS s" | tee -a "$DEST/timeline.txt"
cat "$DEST"/*/summary.json 2>/dev/null
if [ "$DEST" != "$OUT" ]; then
  rm -rf "$DEST"/*/model/codec
  mkdir -p "$OUT"
  tar cf - -C "$DEST" . | split -b 15M - "$OUT/results.tar."
  rm -rf "$DEST"
fi
exit 0
