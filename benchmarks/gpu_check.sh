#!/usr/bin/env bash
# The GPU check: about 8 minutes on one GPU. Run from anywhere in a checkout with the package installed:
#
#     bash benchmarks/gpu_check.sh            # PYTHON=... and OUT=... override the interpreter and the folder
#
# 1. the test suite's CUDA-marked tests (tests/test_cuda.py: every method on CUDA, bf16/fp16 autocast against
#    fp32, torch.compile and channels_last, teacher replay on the GPU);
# 2. a single-GPU NCCL DDP run (torchrun --nproc_per_node 1) of a short kd training;
# 3. the step-time table of kd, dkd, dtkd, afd, rtk, unic, switokd, dml and gradient balancing against the
#    physical floor at batch 256, resnet32x4 -> resnet8x4 (adaptkd bench);
# 4. live against replayed KD epoch time and cache building against plain teacher inference
#    (benchmarks/replay_speed.py --device cuda).
# Everything lands in $OUT; $OUT/gpu_check.md is the one Markdown page to paste into benchmarks/gpu.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.md"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA GPU visible to $PY; nothing to check here" >&2
    exit 2
fi

status() {  # name, exit code -> table cell
    if [ "$2" -eq 0 ]; then echo "| $1 | passed |"; elif [ "$2" -eq 124 ]; then echo "| $1 | TIMED OUT |";
    else echo "| $1 | FAILED (exit $2) |"; fi
}

{
    echo "# GPU check"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- GPU: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)"
    echo "- $($PY -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, '\
'bf16 {torch.cuda.is_bf16_supported()}")')"
    echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo
    echo "| check | result |"
    echo "|---|---|"
} > "$REPORT"

# 1. CUDA-marked tests
timeout 240 $PY -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py -x > "$OUT/tests.log" 2>&1
rc=$?
status "CUDA tests (\`pytest -m cuda tests/test_cuda.py\`): $(tail -1 "$OUT/tests.log")" $rc >> "$REPORT"

# 2. single-GPU NCCL DDP run
cat > "$OUT/ddp.yaml" <<'YAML'
data: {name: digits, batch_size: 64}
student: {arch: cnn_small}
teachers: [{arch: resnet20, random_init: true}]
method: {name: kd}
optim: {name: sgd, lr: 0.05, epochs: 2, schedule: cosine, milestones: []}
run: {device: cuda, precision: bf16, progress: false, latency: false, tensorboard: false, overwrite: true}
YAML
timeout 120 $PY -m torch.distributed.run --standalone --nproc_per_node 1 -m adaptkd train "$OUT/ddp.yaml" \
    "run.out=$OUT/ddp" > "$OUT/ddp.log" 2>&1
rc=$?
status "DDP, torchrun --nproc_per_node 1, NCCL (adaptkd's backend on CUDA): $(tail -1 "$OUT/ddp.log" | cut -c1-100)" \
    $rc >> "$REPORT"

# 3. step time against the floor at batch 256
timeout 300 $PY -m adaptkd bench --device cuda --batch 256 --teacher resnet32x4 --student resnet8x4 \
    --methods kd,dkd,dtkd,afd,rtk,unic,switokd,dml --balancers fixed,gradient --balancer-methods kd \
    --steps 30 --warmup 5 --out "$OUT/bench" > "$OUT/bench.log" 2>&1
rc=$?
status "step time, batch 256 (\`adaptkd bench\`)" $rc >> "$REPORT"

# 4. live vs replayed KD epoch, cache building vs plain inference
timeout 150 $PY benchmarks/replay_speed.py --device cuda --batch 256 --steps 20 --rounds 3 \
    --out "$OUT/replay.md" > "$OUT/replay.log" 2>&1
rc=$?
status "teacher replay speed (\`benchmarks/replay_speed.py --device cuda\`)" $rc >> "$REPORT"

{
    echo
    echo "## Step time against the floor (batch 256, resnet32x4 -> resnet8x4)"
    echo
    if [ -f "$OUT/bench/bench.md" ]; then cat "$OUT/bench/bench.md"; else tail -20 "$OUT/bench.log"; fi
    echo
    echo "## Teacher replay"
    echo
    if [ -f "$OUT/replay.md" ]; then tail -n +3 "$OUT/replay.md"; else tail -20 "$OUT/replay.log"; fi
} >> "$REPORT"

cat "$REPORT"
grep -q "FAILED\|TIMED OUT" "$REPORT" && exit 1
exit 0
