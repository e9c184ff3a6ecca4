#!/usr/bin/env bash
# Short GPU smoke run: DDP + AMP training through mtlkit against a hand-written loop, images/s.
# Usage: benchmarks/gpu_smoke.sh [NPROC]   (run from the repository root, venv active or .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
NPROC=${1:-$($PY -c "import torch; print(max(1, torch.cuda.device_count()))")}
OUT=${OUT:-runs/gpu_smoke}
mkdir -p "$OUT"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
for precision in bf16 fp16; do
  $PY -m torch.distributed.run --standalone --nproc_per_node="$NPROC" -m mtlkit train configs/demo.yaml \
    -o output_dir="$OUT/$precision" -o trainer.device=cuda -o trainer.precision=$precision \
    -o trainer.epochs=3 -o trainer.batch_size=128 -o trainer.progress=off -o trainer.plot=false
done
$PY benchmarks/gpu_throughput.py --out "$OUT"
