#!/usr/bin/env bash
# The CUDA checks, as one prepared script for a session that has the GPU machine (the device
# tool's `status` says so); its python3 holds PyTorch, pluggy, PyYAML, torchmetrics, TensorBoard
# and pytest, so nothing is fetched:
#
#   run(command="bash benchmarks/cuda_checks.sh", timeout_s=540)
#
# It installs seqvae (editable, no dependencies), then runs: the CUDA sample test,
# `seqvae train --device cuda`, a data-parallel run with nccl (one process per GPU, through
# torchrun), and `benchmarks/train_step.py --device cuda --vs-plain` at small and TIMIT sizes.
# Everything it prints is also in $OUT/log; the last lines are one summary line per check.
# `DEVICE=cpu bash benchmarks/cuda_checks.sh` runs the same steps on the CPU (gloo), as a dry run.
set -u -o pipefail
OUT=${OUT:-/tmp/seqvae-cuda-checks}
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
STEPS=${STEPS:-10}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
summary=()

check() {  # check NAME COMMAND...: run it, log it, remember how it ended
    local name=$1
    shift
    echo "== $name: $*" | tee -a "$OUT/log"
    local started=$SECONDS
    "$@" 2>&1 | tee -a "$OUT/log"
    local status=${PIPESTATUS[0]}
    summary+=("$name: exit $status in $((SECONDS - started)) s")
}

if ! $PYTHON -c "import seqvae" 2>/dev/null; then
    $PYTHON -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 ||
        { cat "$OUT/install.log"; exit 1; }
fi
$PYTHON -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.device_count(), 'GPUs')" | tee -a "$OUT/log"
npz="$OUT/toy.npz"
$PYTHON -c "from pathlib import Path; from seqvae.testing.data import write_demo_npz; write_demo_npz(Path('$npz'), dims=8, steps=40)"
gpus=1
if [ "$DEVICE" = cuda ]; then
    gpus=$($PYTHON -c "import torch; print(max(1, torch.cuda.device_count()))")
    check "sample test on CUDA" $PYTHON -m pytest -q -p no:cacheprovider tests/test_sample_cli.py -k cuda
fi
train=(-m seqvae train --model zforcing --dataset npz --data "$npz" --max-steps "$STEPS" --device "$DEVICE"
       --set train.eval_every=5 --set train.log_every=1)
check "train --device $DEVICE" $PYTHON "${train[@]}" --out "$OUT/train"
check "torchrun DDP, $gpus process(es), $DEVICE" $PYTHON -m torch.distributed.run --standalone \
    --nproc_per_node="$gpus" "${train[@]}" --out "$OUT/ddp"
for dims in small timit; do
    check "train_step $dims --vs-plain" $PYTHON benchmarks/train_step.py --model zforcing --dims "$dims" \
        --device "$DEVICE" --steps 10 --vs-plain --json
done
printf '%s\n' "${summary[@]}" | tee -a "$OUT/log"
