"""S-matrix against multislice on one sample, side by side: time and max error (issue 24.3).

Usage: python -m benchmarks.smatrix_speed [--preset paper] [--device auto|cpu|gpu] [--rounds 1]

Sample 0 of the preset, its potential built on the device and its probes made as the stemdl
engine makes them (benchmarks/batched_multislice.py `prepared_sample`); then
`multislice.diffraction_window` (P propagations) and `smatrix.diffraction_window_smatrix`
(K plane-wave propagations and a P×K matrix product), the device synchronized, best of
`--rounds`. Printed: P, K, seconds of each, their ratio, and the S-matrix's max error against
multislice (÷ the pattern maximum). The S-matrix is worth an `engine` choice where it is
faster at ≤ 1e-4 (issue 24): it is not wired into `simulation.engine` yet.
"""

from __future__ import annotations

import argparse

import numpy as np

from benchmarks.batched_multislice import _best_s, prepared_sample
from stemdl.simulate.device import resolve_device, to_numpy
from stemdl.simulate.multislice import diffraction_window
from stemdl.simulate.smatrix import diffraction_window_smatrix, plane_wave_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    on = resolve_device(args.device)
    probes, potential, window, shape = prepared_sample(args.preset, on)
    multislice_s, reference = _best_s(lambda: diffraction_window(probes, potential, window, on),
                                      on, args.rounds)
    smatrix_s, ours = _best_s(lambda: diffraction_window_smatrix(probes, potential, window, on),
                              on, args.rounds)
    reference = np.asarray(to_numpy(reference), np.float64)
    error = float(np.max(np.abs(np.asarray(to_numpy(ours), np.float64) - reference)))
    print(f"{args.preset} sample 0 on {on}: {shape}")
    print("| probes P | plane waves K | multislice s | S-matrix s | multislice ÷ S-matrix | "
          "max error |")
    print("|---:|---:|---:|---:|---:|---:|")
    print(f"| {probes.num_probes} | {plane_wave_count(probes)} | {multislice_s:.3f} | "
          f"{smatrix_s:.3f} | {multislice_s / smatrix_s:.2f} | "
          f"{error / float(np.max(reference)):.1e} |")


if __name__ == "__main__":
    main()
