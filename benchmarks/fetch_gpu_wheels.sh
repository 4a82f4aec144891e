#!/usr/bin/env bash
# Download into .whl/ (ignored by git) the wheels listed in benchmarks/gpu_wheels.txt, for the
# device tool's GPU machine (Python 3.12, x86-64, no network there), at exactly those versions
# (one version of each: two would stop the install there). Run here, in the repository root,
# before calling the device tool with carry [".whl"] and `bash benchmarks/gpu_check.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
plat=()
for n in 17 24 27 28 31 34 35; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
plat+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64)
grep -v '^#' benchmarks/gpu_wheels.txt | grep -v '^$' | while read -r requirement; do
  if python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp "${plat[@]}" -d .whl "$requirement" 2>/dev/null; then
    continue
  fi
  # No wheel on the index (python-hostlist ships an sdist only): build one here, which is
  # right for any Python only if it is pure (py3-none-any).
  built=$(mktemp -d)
  python3 -m pip wheel -q --no-deps -w "$built" "$requirement" \
    || { echo "fetch_gpu_wheels: could not fetch or build $requirement" >&2; exit 1; }
  if ! ls "$built"/*-py3-none-any.whl >/dev/null 2>&1; then
    echo "fetch_gpu_wheels: $requirement built a platform wheel here; it needs a cp312 one" >&2
    exit 1
  fi
  mv "$built"/*.whl .whl/
done
ls -1 .whl
du -sh .whl
