#!/usr/bin/env bash
# The GPU check of issues 12 and 24, for a machine with CUDA (the device tool's nvidia-h200:
# Python 3.12 with torch, CuPy, numba, NumPy, ..., no network), in one go, within 8 minutes:
#   1. install what that machine lacks from .whl/ into /tmp/site, and make this checkout
#      importable as `stemdl` (it installs under that name: /tmp/pkgroot/stemdl -> here);
#   2. python -m pytest -m gpu on the files that hold GPU tests: CPU-vs-GPU sample agreement,
#      stemdl engine vs abTEM's multislice on CuPy, determinism on the GPU, NCCL training;
#   3. the simulation table (benchmarks/simulate_speed.py --engines-on gpu): seconds per sample
#      of the naive abTEM script on CuPy, stemdl's simulate_sample and the cuFFT floor, on 4
#      `small` samples and on one `paper`-size sample (1024 probes, ~1000² grid);
#   4. many samples per GPU (benchmarks/batched_multislice.py): samples/s of B `small` samples
#      propagated one at a time and in one batch, and their difference;
#   5. training throughput (benchmarks/train_throughput.py): ms/sample, TFLOP/s and the fraction
#      of the bf16 matmul ceiling measured there, `small` and `paper`, batch 1 and 4;
#   6. `stemdl run small` wall time (its run.log, metrics.json, report.md copied to
#      $OUT/run-small), with the time left; when it is cut short, the stages it reached and
#      when (from run.log);
#   7. if time is left, `small` training through torch.compile, and the S-matrix against
#      multislice on the `paper` sample (benchmarks/smatrix_speed.py: time, max error).
#   (3b, before 4: the per-stage CUDA-event profile of the `paper` sample,
#    benchmarks/simulate_profile.py.)
# Each step has its own time limit, cut to what is left of GPU_CHECK_BUDGET_S (480 s), so one
# that hangs costs its limit, not the check. A `stemdl run small` took > 250 s on the H200
# before issue 24; if it is cut short, GPU_CHECK_BUDGET_S=570 with the device tool's
# timeout_s 600 gives it 90 s more.
#
# Prepare (here, in the repository root; 32 MB of wheels, the versions this checkout is tested
# with, benchmarks/gpu_wheels.txt):
#   bash benchmarks/fetch_gpu_wheels.sh
# Run (there; with the device tool: carry [".whl"], timeout_s 540):
#   bash benchmarks/gpu_check.sh
# CPU mode, to check the script itself on a machine without a GPU (the same steps, sized down:
# the GPU tests are collected and skip, the tables run on the CPU on `tiny`/`small`, training
# `small` only, the run `tiny`):
#   GPU_CHECK_CPU=1 bash benchmarks/gpu_check.sh
# Output: the pytest summary and the Markdown tables, also written to $OUT (or ./gpu-check) as
# gpu_check.log, for benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
began=$(date +%s)
budget_s=${GPU_CHECK_BUDGET_S:-480}
cpu_mode=${GPU_CHECK_CPU:-0}
out="${OUT:-gpu-check}"
mkdir -p "$out"
log="$out/gpu_check.log"
export PYTHONUNBUFFERED=1
say() { echo "$@" | tee -a "$log"; }
left() { echo $(( budget_s - ($(date +%s) - began) )); }
step() {  # step NAME LIMIT_S command...: run with a time limit, log it, note failures
  local name=$1 limit=$2; shift 2
  local remaining; remaining=$(left)
  (( limit > remaining - 5 )) && limit=$(( remaining - 5 ))
  if (( limit < 10 )); then say "gpu_check: $name skipped (no time left)"; status=1; return; fi
  say "== $name (limit ${limit} s, $(( $(date +%s) - began )) s in)"
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  say "== $name: exit $rc after $(( $(date +%s) - t0 )) s"
  (( rc == 0 )) || status=1
}
if [ "$cpu_mode" = 0 ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { say "gpu_check: installing .whl/ failed"; exit 1; }
fi
# The repository root is the package `stemdl` (pyproject's package-dir), so it is imported
# through a folder that holds it under that name.
mkdir -p /tmp/pkgroot && ln -sfn "$PWD" /tmp/pkgroot/stemdl
export PYTHONPATH="/tmp/site:/tmp/pkgroot:$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
  date -u
  if [ "$cpu_mode" = 0 ]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  else
    echo "CPU mode: $(nproc) cores"
  fi
  python3 -c "import abtem, numpy, torch; print('abtem', abtem.__version__, 'numpy', numpy.__version__, 'torch', torch.__version__)"
} 2>&1 | tee -a "$log"
status=0
if [ "$cpu_mode" = 0 ]; then
  device=gpu; sim_presets=(small paper); run_preset=small; train_presets=(small paper)
  batches=(1 8 32)
else
  device=cpu; sim_presets=(tiny small); run_preset=tiny; train_presets=(small); batches=(1 4)
fi
gpu_tests=(tests/simulate/test_simulate_device.py tests/simulate/test_multislice_engine.py
           tests/train/test_train_gpu.py)
step "GPU tests" 100 python3 -m pytest -m gpu -q -p no:cacheprovider -o addopts="-ra" -s "${gpu_tests[@]}"
step "simulation: ${sim_presets[0]}" 45 python3 -m benchmarks.simulate_speed --engines-on "$device" \
  --presets "${sim_presets[0]}" --samples 4
step "simulation: ${sim_presets[1]}" 70 python3 -m benchmarks.simulate_speed --engines-on "$device" \
  --presets "${sim_presets[1]}" --samples 1
step "per-stage profile: ${sim_presets[1]}" 50 python3 -m benchmarks.simulate_profile \
  --preset "${sim_presets[1]}" --device "$device"
step "many samples per GPU" 30 python3 -m benchmarks.batched_multislice --preset small --device "$device" \
  --batches "${batches[@]}" --rounds 2
step "training throughput" 45 python3 -m benchmarks.train_throughput --presets "${train_presets[@]}" \
  --batch 1 4 --steps 10
run_dir="${TMPDIR:-/tmp}/gpu-check-run-$run_preset"  # the store stays there; the logs come back
rm -rf "$run_dir"
step "stemdl run $run_preset" 400 python3 -m stemdl.pipeline run "$run_preset" --out "$run_dir"
if [ -f "$run_dir/run.log" ]; then  # the stages reached, with their start times
  grep -E "INFO stemdl.end_to_end: (stage|stemdl run)" "$run_dir/run.log" | tee -a "$log"
  mkdir -p "$out/run-$run_preset"
  cp "$run_dir"/run.log "$run_dir"/*.json "$run_dir"/report.md "$out/run-$run_preset/" 2>/dev/null
fi
[ -f "$run_dir/metrics.json" ] && python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))
print('stemdl run wall s:', {k: round(v, 1) for k, v in m['wall_s'].items()})
print('training:', {k: (v['ranks'], round(v['samples_per_s'], 1)) for k, v in m['training'].items()})
" "$run_dir/metrics.json" 2>&1 | tee -a "$log"
step "training throughput, torch.compile" 40 python3 -m benchmarks.train_throughput --presets small \
  --batch 4 --steps 10 --compile
step "S-matrix vs multislice: ${sim_presets[1]}" 60 python3 -m benchmarks.smatrix_speed \
  --preset "${sim_presets[1]}" --device "$device"
say "gpu_check: exit status $status after $(( $(date +%s) - began )) s"
exit $status
