#!/usr/bin/env bash
# The GPU check of issue 12, for a machine with CUDA (e.g. the project's nvidia-h200 device),
# in one go, within 8 minutes:
#   1. install what the machine lacks from .whl/ (wheels fetched beforehand, on a machine with
#      pip access, by ../shared/tools/gpu-wheels.sh; see "Prepare" below) into /tmp/site;
#   2. python -m pytest -m gpu: CPU-vs-GPU sample agreement, stemdl engine vs abTEM's
#      multislice on CuPy, determinism on the GPU, NCCL training;
#   3. seconds per sample of simulate_sample with engine=abtem (abTEM's multislice on CuPy) and
#      engine=stemdl (cuFFT), on 4 `small` samples and on one `paper`-size sample
#      (1024 probes, ~1000² grid, 200 Å of d_hkl slices).
# Prepare (here, in the repository root):
#   ../shared/tools/gpu-wheels.sh "abtem==$(python -c 'import abtem; print(abtem.__version__)')" \
#       pydantic pydantic-core annotated-types typing-inspection
# Run (there; with the device tool: carry [".whl"], timeout_s 540):
#   bash benchmarks/gpu_check.sh
# Output: the pytest summary and two Markdown tables, also written to $OUT (or ./gpu-check) as
# gpu_check.log, for benchmarks/RESULTS.md.
# It has not been run yet: the machines it was written on had no GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
log="$out/gpu_check.log"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "gpu_check: installing .whl/ failed" | tee -a "$log"; exit 1; }
  export PYTHONPATH="/tmp/site:$PWD"
else
  export PYTHONPATH="$PWD"
fi
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import abtem, cupy, numpy; print('abtem', abtem.__version__, 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee -a "$log"
status=0
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="" -s 2>&1 | tee -a "$log" || status=1
timeout 90 python3 -m benchmarks.simulate_speed --engines-on gpu --presets small --samples 4 2>&1 | tee -a "$log" || status=1
timeout 150 python3 -m benchmarks.simulate_speed --engines-on gpu --presets paper --samples 1 2>&1 | tee -a "$log" || status=1
echo "gpu_check: exit status $status" | tee -a "$log"
exit $status
