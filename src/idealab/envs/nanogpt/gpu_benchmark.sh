#!/bin/sh
# GPU evidence for docs/BENCHMARKS.md (section nanogpt), on one GPU:
#   1. the card's bf16 matmul rate (8192^3, random data), the ceiling that MFU is measured against;
#   2. the `1gpu` preset (d12, micro-batch 32x1024, 8-step accumulation, bf16, torch.compile) trained for
#      TRAIN_SECONDS on the offline byte-level corpus, then the full token-by-token validation of
#      10,485,760 tokens (the validation text is tiled to that size: a timing run, not a loss to compare);
#   3. a summary: median tokens/s after warm-up, MFU, peak memory, validation time.
# usage: sh gpu_benchmark.sh TEXT_FILE [TRAIN_SECONDS] [LOG_FILE]     (run in this directory)
set -eu
TEXT=$1
SECS=${2:-240}
LOG=${3:-gpu_benchmark.log}
PY=${PYTHON:-python3}
export IDEALAB_DATA_DIR=${IDEALAB_DATA_DIR:-/tmp/idealab-bench}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
PEAK=$($PY - <<'PYEOF'
import torch
a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
for _ in range(3):
    a @ b
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(20):
    a @ b
end.record()
torch.cuda.synchronize()
print(f"{2 * 8192**3 * 20 / (start.elapsed_time(end) / 1000) / 1e12:.1f}")
PYEOF
)
echo "bf16 matmul 8192^3: $PEAK TFLOP/s"
$PY prepare.py offline --no-shakespeare --text "$TEXT" --min-val-tokens 10485761
OUTDIR=$(mktemp -d)
export NANOGPT_DATASET=shakespeare_bytes NANOGPT_MODEL=d12 NANOGPT_DEVICE_BATCH=32 NANOGPT_VAL_SIZE=10485760 \
  PYTHONUNBUFFERED=1
IDEALAB_BUDGET_S=$SECS IDEALAB_OUTPUT_DIR=$OUTDIR $PY train_gpt.py 2>&1 | tee "$LOG"
IDEALAB_ARTEFACT_DIR=$OUTDIR $PY score.py 2>&1 | tee -a "$LOG"  # the separate scorer, as idealab runs it
$PY - "$LOG" "$PEAK" <<'PYEOF'
import re, statistics, sys
log, peak = open(sys.argv[1]).read(), float(sys.argv[2])
rates = [float(r.replace(",", "")) for s, r in re.findall(r"step:(\d+) train_loss:\S+ .*?tok/s:([\d,]+)", log)
         if int(s) > 20]
L, C, T, N = 12, 768, 1024, 124_318_464 - 1024 * 768  # d12 parameters without position embeddings
flops_per_token = 6 * N + 12 * L * T * C  # PaLM-style estimate (nanoGPT's estimate_mfu)
if not rates:
    sys.exit("no training steps after step 20 were logged: give TRAIN_SECONDS of a minute or more")
tps = statistics.median(rates)
print(f"steps timed: {len(rates)}; median tokens/s: {tps:,.0f}; model TFLOP/s: {tps * flops_per_token / 1e12:.1f}; "
      f"MFU vs measured bf16 peak {peak:.0f}: {100 * tps * flops_per_token / 1e12 / peak:.1f}%")
for line in log.splitlines():
    if line.startswith(("peak memory", "token-by-token", "causality")) or "val_loss:" in line:
        print(line)
PYEOF
