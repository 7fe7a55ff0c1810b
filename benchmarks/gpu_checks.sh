#!/usr/bin/env bash
# The checks that need a GPU, as one prepared run for a lent GPU machine (the device tool):
#
#     bash benchmarks/gpu_checks.sh            # on the GPU machine, from the repository root
#     DEVICE=cpu bash benchmarks/gpu_checks.sh # the same steps on the CPU, to try the script
#
# 1. the test suite with the GPU as the default device (auto picks cuda);
# 2. vectorised against one-by-one training, K = 64 MLPs (issue target: at least 15x);
# 3. one timed run of `pytest benchmarks` on the GPU;
# 4. two xdist workers sharing the GPU, and the device each trial records.
# Each step has its own time limit and a failing step does not stop the others; everything
# it prints also goes to $OUT (default gpu-results/).
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
python -m pip install --quiet -e . --no-deps
step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "== $name ($*)" | tee -a "$OUT/summary.txt"
    timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
    echo "exit status $?" | tee -a "$OUT/summary.txt"
    tail -n 4 "$OUT/$name.txt" | tee -a "$OUT/summary.txt"
}
{ nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"; python -c "import torch; print(torch.__version__, torch.cuda.is_available())"; } > "$OUT/machine.txt"
step tests 240 python -m pytest -q -p no:cacheprovider -x tests "--hparams-device=$DEVICE"
step vectorized 180 python benchmarks/vectorized_speed.py --device "$DEVICE" --k 64 --repeats 5
step suite 180 python benchmarks/timing.py --runs 1 -- "--hparams-device=$DEVICE"
step xdist 120 python -m pytest -q -p no:cacheprovider -n 2 "--hparams-devices=$DEVICE" \
    examples "--hparams-json=$OUT/xdist.json"
python - "$OUT/xdist.json" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
trials = json.load(open(sys.argv[1]))["trials"]
print("xdist trials by worker and device:",
      sorted({(t["worker"], t["device"]) for t in trials}), f"({len(trials)} trials)")
PY
