#!/usr/bin/env bash
# Issue 17 on one GPU, one command: the step-time breakdown, the levers, the shapes and N runs at once.
# Each stage writes its tables (.md, .csv/.json) under $OUT/<stage>/; STAGES picks a subset so that the
# work fits one device call each (the device tool allows 10 minutes a command):
#   STAGES="profile levers" bash benchmarks/gpu_issue17.sh        # call 1
#   STAGES="autotune shapes multirun" DATA=devcarry/ts10k/data bash benchmarks/gpu_issue17.sh   # call 2
# DATA: a tokenized folder with a 10K BPE (train.bin, val.bin, tokenizer/) for the multirun stage.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-results/benchmarks/issue17}
STAGES=${STAGES:-profile levers autotune shapes multirun}
DATA=${DATA:-devcarry/ts10k/data}
COMMON="--vocab-size 10000 --block-size 512 --warmup 8 --steps 20"
LEVERS=${LEVERS:-compile compile-sep-loss compile-loss compile-loss-cdt compile-chunked-ce compile-foreach-adam cudagraphs-loss}
BEST=${BEST:-compile-loss}
mkdir -p "$OUT"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv
for stage in $STAGES; do
    echo "=== $stage $(date +%T)"
    case $stage in
        profile) for v in ${PROFILE_VARIANTS:-compile compile-loss}; do
                     python3 benchmarks/gpu_profile.py --batch-size 128 --vocab-size 10000 --variant "$v" \
                         --out "$OUT/profile-$v"; done ;;
        levers) chunk=""; case " $LEVERS " in *" compile-chunked-ce "*) chunk="--chunk-tokens 16384" ;; esac
                python3 benchmarks/train_throughput.py $COMMON --batch-size 128 --variants $LEVERS $chunk \
                     --out "$OUT/levers" ;;
        autotune) python3 benchmarks/train_throughput.py $COMMON --batch-size 128 \
                     --variants autotune-loss --out "$OUT/autotune" ;;
        shapes) python3 benchmarks/train_throughput.py $COMMON --batch-size 32 64 256 --variants "$BEST" \
                     --out "$OUT/shapes" ;;
        multirun) python3 benchmarks/gpu_multirun.py --data "$DATA" --ns 1 2 4 8 --steps "${MR_STEPS:-1000}" \
                     --out "$OUT/multirun" ;;
        *) echo "unknown stage $stage" >&2; exit 2 ;;
    esac
done
echo "=== done $(date +%T)"
