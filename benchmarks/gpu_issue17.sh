#!/usr/bin/env bash
# Issue 17 on one GPU, one command: the step-time breakdown, the levers, SpinNet vs baseline at every
# size, and N runs at once. Each stage writes its tables (.md, .csv/.json) under $OUT/<stage>/; STAGES
# picks a subset so that the work fits one device call each (the device tool allows 10 minutes a command),
# and STAGE_TIMEOUT (seconds) ends a stage that runs long; its tables up to then are kept (every script
# writes after each row):
#   STAGES="multirun" bash benchmarks/gpu_issue17.sh                   # N study-preset runs, with/without MPS
#   STAGES="levers autotune sizes" bash benchmarks/gpu_issue17.sh      # MFU levers, SpinNet/baseline per size
#   STAGES="profile" bash benchmarks/gpu_issue17.sh                    # torch profiler breakdown
#   STAGES="interleave" bash benchmarks/gpu_issue17.sh                 # SpinNet vs baseline, interleaved rounds
#   STAGES="losscheck" bash benchmarks/gpu_issue17.sh                  # baseline-28m loss, fp32 vs bf16 residual
#   STAGES="stack" bash benchmarks/gpu_issue17.sh                      # N study-preset models as one vmapped stack
# LEVER_REPEATS=R times the levers in R interleaved rounds (train_throughput.py --repeats).
# DATA: a tokenized folder with a 10K BPE (train.bin, val.bin, tokenizer/) for the multirun stage, made by
#   python benchmarks/train_throughput.py --prepare ../shared/data/tinystories/tinystories_subset.jsonl \
#       --tokenizer bpe:10000 --out devcarry/ts10k
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-results/benchmarks/issue17}
STAGES=${STAGES:-profile levers autotune sizes multirun}
DATA=${DATA:-devcarry/ts10k/data}
STAGE_TIMEOUT=${STAGE_TIMEOUT:-540}
COMMON="--vocab-size 10000 --block-size 512 --warmup 8 --steps 20"
LEVERS=${LEVERS:-compile-sep-loss compile-loss compile-loss-einsum-mixer}
AUTOTUNE=${AUTOTUNE:-autotune-loss}
LEVER_PRESETS=${LEVER_PRESETS:-baseline-28m spinnet-28m}  # the levers and autotune stages (128 x 512)
SIZES=${SIZES:-baseline-1m-shape spinnet-1m baseline-3m-shape spinnet-3m baseline-8m-shape spinnet-8m}
MR_CONFIGS=${MR_CONFIGS:-spinnet-3m baseline-3m-matched}
mkdir -p "$OUT"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv
echo "MPS control: $(command -v nvidia-cuda-mps-control || echo missing)"
for stage in $STAGES; do
    echo "=== $stage $(date +%T)"
    case $stage in
        profile) for v in ${PROFILE_VARIANTS:-compile-loss}; do
                     timeout "$STAGE_TIMEOUT" python3 benchmarks/gpu_profile.py --batch-size 128 --vocab-size 10000 \
                         --variant "$v" --out "$OUT/profile-$v"; done ;;
        levers) timeout "$STAGE_TIMEOUT" python3 benchmarks/train_throughput.py $COMMON --batch-size 128 \
                     --presets $LEVER_PRESETS --variants $LEVERS ${LEVER_REPEATS:+--repeats $LEVER_REPEATS} \
                     --out "$OUT/${LEVER_NAME:-levers}" ;;
        autotune) timeout "$STAGE_TIMEOUT" python3 benchmarks/train_throughput.py $COMMON --batch-size 128 \
                     --presets $LEVER_PRESETS --variants $AUTOTUNE --out "$OUT/autotune" ;;
        sizes) timeout "$STAGE_TIMEOUT" python3 benchmarks/train_throughput.py --presets $SIZES --vocab-size 10000 \
                     --block-size 256 --batch-size 32 --warmup 8 --steps 20 --variants ${SIZE_VARIANTS:-eager compile-loss} \
                     --out "$OUT/${SIZE_NAME:-sizes}" ;;
        interleave) timeout "$STAGE_TIMEOUT" python3 benchmarks/train_throughput.py --presets $SIZES --vocab-size 10000 \
                     --block-size 256 --batch-size 32 --warmup 8 --steps 20 --repeats "${IL_REPEATS:-5}" \
                     --variants ${SIZE_VARIANTS:-cudagraphs-loss} --out "$OUT/${SIZE_NAME:-interleave}" ;;
        # one process over N models (trainers.stack): aggregate tokens/s of the stack vs one model, interleaved
        stack) timeout "$STAGE_TIMEOUT" python3 benchmarks/train_throughput.py --presets ${STACK_PRESETS:-spinnet-3m baseline-3m-matched} \
                     --vocab-size 10000 --block-size 256 --batch-size 32 --warmup 5 --steps 20 --repeats "${IL_REPEATS:-3}" \
                     --variants ${STACK_VARIANTS:-eager eager-stack8 eager-stack16} --out "$OUT/${STACK_NAME:-stack}" ;;
        # real 10K-BPE data, baseline-28m at the MFU shape (128 x 512), compiled as trainers.train compiles
        # it, once per residual stream dtype; the runs (checkpoints) stay in /tmp, the curves go to $OUT
        losscheck) for rd in float32 autocast; do
                     timeout "$STAGE_TIMEOUT" python3 benchmarks/train_throughput.py --train --data "$DATA" \
                         --presets baseline-28m --vocab-size 10000 --batch-size 128 --block-size 512 \
                         --tokens "${LC_TOKENS:-20e6}" --set train.compile=true --set "model.residual_dtype=$rd" \
                         --set "train.tokenizer=${LC_TOKENIZER:-bpe:10000}" \
                         --no-progress --out "/tmp/losscheck-$rd"
                     mkdir -p "$OUT/losscheck-$rd"
                     cp "/tmp/losscheck-$rd/loss_curves.csv" "/tmp/losscheck-$rd/train_summary.json" "$OUT/losscheck-$rd/"
                 done ;;
        multirun) timeout "$STAGE_TIMEOUT" python3 benchmarks/gpu_multirun.py --data "$DATA" --configs $MR_CONFIGS \
                     --ns ${MR_NS:-1 4 8} --mps ${MR_MPS:-both} --steps "${MR_STEPS:-300}" ${MR_EXTRA:-} \
                     --out "$OUT/${MR_NAME:-multirun}" ;;
        *) echo "unknown stage $stage" >&2; exit 2 ;;
    esac
    echo "=== $stage exit $? $(date +%T)"
done
echo "=== done $(date +%T)"
