#!/usr/bin/env bash
# GPU readiness check (issue 12, part 5): on a CUDA machine, in under 10 minutes, runs
#   1. the README's flagship command (`cfs bench`: split-digits, the baselines), plain and with
#      --amp --compile (bf16 autocast where the GPU supports it, torch.compile of the backbone);
#   2. a count of host-device synchronisations during training epochs (torch's sync debug mode)
#      for finetune and the strategies whose steps were made sync-free (ewc, lwf, er, derpp,
#      er-ace, mir, nckd): the number must not grow with the number of batches;
#   3. the engine-overhead benchmark (benchmarks/perf/overhead.py) on the GPU;
#   4. a 2-rank torchrun of `cfs bench` (nccl with 2+ GPUs; gloo when the ranks share one GPU),
#      with its accuracy beside the 1-process run's;
# and prints the figures. On a machine without CUDA it says so in one line and exits 0.
#
#   bash benchmarks/perf/gpu_check.sh            # results under a temporary folder
#   GPU_CHECK_OUT=/tmp/gpu-check bash benchmarks/perf/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check; run it on a GPU machine"
    exit 0
fi

OUT=${GPU_CHECK_OUT:-$(mktemp -d /tmp/cfs-gpu-check.XXXXXX)}
mkdir -p "$OUT"
START=$(date +%s)
step() { echo; echo "== $1 ($(( $(date +%s) - START )) s elapsed)"; }
# `cfs bench` prints its table on stdout and one line per run on stderr
bench() { timeout "$1" "$PY" -m cfs bench --no-progress --device cuda "${@:2}"; }

"$PY" - <<'EOF'
import torch
p = torch.cuda.get_device_properties(0)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} x {p.name}, "
      f"{p.total_memory / 2**30:.0f} GiB, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
EOF

step "1. flagship: cfs bench (README's first command) on the GPU"
bench 180 --out "$OUT/flagship"
step "1b. flagship with --amp --compile"
bench 300 --amp --compile --out "$OUT/flagship-amp-compile"

step "2. host-device synchronisations per training epoch (must not grow with the batch count)"
timeout 240 "$PY" - <<'EOF'
import warnings

import torch

from cfs import testing
from cfs.engine.continual import ContinualLoop

original = ContinualLoop._epochs
counts = []


def epochs(self, start):
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        original(self, start)
    torch.cuda.set_sync_debug_mode(0)
    counts[-1] += sum("synchroniz" in str(w.message) for w in caught)


ContinualLoop._epochs = epochs
for spec in ("finetune", "ewc", "lwf", "er", "derpp", "er-ace", "mir", "nckd"):
    per_size = []
    for bs in (64, 8):
        counts.append(0)
        testing.run(spec, epochs=2, batch_size=bs, device="cuda", max_train_per_class=64)
        per_size.append(counts[-1])
    print(f"{spec:9s} synchronisations in 5 experiences x 2 epochs: batch 64 {per_size[0]}, batch 8 {per_size[1]}: "
          f"{'flat' if per_size[0] == per_size[1] else 'GROWS with the batch count'}")
EOF

step "3. engine overhead on the GPU (cfs vs a bare PyTorch loop)"
timeout 300 "$PY" benchmarks/perf/overhead.py --device cuda --repeats 3

step "4. 2-rank torchrun of cfs bench"
timeout 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 -m cfs bench --no-progress --device cuda \
    --strategy finetune --strategy replay --epochs 5 --out "$OUT/two-ranks"
bench 120 --strategy finetune --strategy replay --epochs 5 --out "$OUT/one-rank"

step "done in $(( $(date +%s) - START )) s; results under $OUT"
