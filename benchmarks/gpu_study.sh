#!/usr/bin/env bash
# The GPU part of the study, in one command on the lent H100 (device tool), outputs under $OUT:
#   1. real training of spinnet-28m and baseline-28m on the tokenized offline story text
#      (snapshots at fixed steps and at val-loss thresholds 4.0 ... 1.5 where they are reached),
#   2. stories generated from every snapshot and best/ checkpoint (samples.jsonl, for
#      childes-compare's loss-to-age test and gpt-eval on a CPU machine afterwards),
#   3. the SpinNet best checkpoint compressed to .spinnet, split into <16 MiB parts so it can come back.
# Usage (device): DATA=devcarry/books/data TOKENS=10e6 bash benchmarks/gpu_study.sh
# Inputs: DATA = a tokenized folder (train.bin, val.bin, tokenizer/) made here with
#   python benchmarks/train_throughput.py --prepare devdata/offline_books.jsonl --tokenizer gpt2 \
#       --val-fraction 0.05 --out devcarry/books
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu_study}
DATA=${DATA:-devcarry/books/data}
TOKENS=${TOKENS:-10e6}
TIME_LIMIT=${TIME_LIMIT:-170}
WORK=${WORK:-/tmp/gpu_study}
PRESETS=${PRESETS:-spinnet-28m baseline-28m}
COMPILE=${COMPILE:-true}
DEVICE=${DEVICE:-cuda}
EVAL_ITERS=${EVAL_ITERS:-20}
mkdir -p "$OUT" "$WORK"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")'

python3 benchmarks/train_throughput.py --train --data "$DATA" --tokens "$TOKENS" --out "$WORK" \
    --time-limit-s "$TIME_LIMIT" --no-progress --presets $PRESETS --device "$DEVICE" \
    --set train.compile="$COMPILE" --set train.eval_interval=50 --set train.eval_iters="$EVAL_ITERS" \
    --set "train.snapshot_steps=${SNAPSHOTS:-[25,50,100,200]}" 2>&1 | tee "$WORK/train.log"

ckpts=()
for preset in $PRESETS; do
    for d in "$WORK/train/$preset"/step_* "$WORK/train/$preset/best"; do
        [ -d "$d" ] && ckpts+=("$d")
    done
done
python3 -m evalsuite.cli generate "${ckpts[@]}" --out "$WORK/samples.jsonl" --device "$DEVICE" \
    --max-new-tokens 200 --batch-size 64 --seed 1337 2>&1 | tail -n 30

python3 -m evalsuite.cli compress "$WORK/train/spinnet-28m/best" -o "$WORK/spinnet-28m-best.spinnet" 2>&1 | tail -n 20
split -b 15M -d "$WORK/spinnet-28m-best.spinnet" "$OUT/spinnet-28m-best.spinnet.part"
sha256sum "$WORK/spinnet-28m-best.spinnet" | tee "$WORK/spinnet-28m-best.spinnet.sha256"

# small files travel together (the device returns at most 8 files)
(cd "$WORK" && tar czf "$OUT/study.tar.gz" train.log samples.jsonl meta.json loss_curves.csv \
    spinnet-28m-best.spinnet.sha256 spinnet-28m-best.spinnet.report.json \
    train/*/metrics_stream.jsonl train/*/config.yaml train/*/best/trainer_state.json \
    train/*/step_*/trainer_state.json train_summary.json 2>/dev/null || true)
ls -la "$OUT"
