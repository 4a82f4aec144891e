#!/usr/bin/env bash
# The GPU check of issue 12, for a machine with CUDA (the device tool's nvidia-h200: Python
# 3.12 with torch, CuPy, numba, NumPy, ..., no network), in one go, within 8 minutes:
#   1. install what that machine lacks from .whl/ into /tmp/site, and make this checkout
#      importable as `stemdl` (it installs under that name: /tmp/pkgroot/stemdl -> here);
#   2. python -m pytest -m gpu on the files that hold GPU tests: CPU-vs-GPU sample agreement,
#      stemdl engine vs abTEM's multislice on CuPy, determinism on the GPU, NCCL training;
#   3. seconds per sample of simulate_sample with engine=abtem (abTEM's multislice on CuPy) and
#      engine=stemdl (cuFFT), on 4 `small` samples and on one `paper`-size sample
#      (1024 probes, ~1000² grid, 200 Å of d_hkl slices).
# Prepare (here, in the repository root; 32 MB of wheels, the versions this checkout is tested
# with, benchmarks/gpu_wheels.txt):
#   bash benchmarks/fetch_gpu_wheels.sh
# Run (there; with the device tool: carry [".whl"], timeout_s 540):
#   bash benchmarks/gpu_check.sh
# Output: the pytest summary and two Markdown tables, also written to $OUT (or ./gpu-check) as
# gpu_check.log, for benchmarks/RESULTS.md.
# Checked without a GPU (session 5): the wheels install into Python 3.12.1 with NumPy 2.5 and
# numba 0.68 beside them (as that machine has), `stemdl simulate tiny --workers 2` runs there,
# and the GPU test files collect. The GPU steps themselves have not run yet: no machine was
# lent to the tasks this was written in.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-check}"
mkdir -p "$out"
log="$out/gpu_check.log"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "gpu_check: installing .whl/ failed" | tee -a "$log"; exit 1; }
fi
# The repository root is the package `stemdl` (pyproject's package-dir), so it is imported
# through a folder that holds it under that name.
mkdir -p /tmp/pkgroot && ln -sfn "$PWD" /tmp/pkgroot/stemdl
export PYTHONPATH="/tmp/site:/tmp/pkgroot:$PWD"
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import abtem, cupy, numpy; print('abtem', abtem.__version__, 'cupy', cupy.__version__, 'numpy', numpy.__version__)"
} 2>&1 | tee -a "$log"
status=0
gpu_tests=(tests/simulate/test_simulate_device.py tests/simulate/test_multislice_engine.py
           tests/train/test_train_gpu.py)
timeout 240 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="-ra" -s "${gpu_tests[@]}" \
  2>&1 | tee -a "$log" || status=1
timeout 90 python3 -m benchmarks.simulate_speed --engines-on gpu --presets small --samples 4 2>&1 | tee -a "$log" || status=1
timeout 150 python3 -m benchmarks.simulate_speed --engines-on gpu --presets paper --samples 1 2>&1 | tee -a "$log" || status=1
echo "gpu_check: exit status $status" | tee -a "$log"
exit $status
