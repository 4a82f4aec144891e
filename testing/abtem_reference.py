"""abTEM called directly on a sample's record: the independent reference of the physics tests.

Only abTEM and ASE calls (atoms from the record's base cell × repetitions, `abtem.Potential`,
`abtem.Probe` with the record's tilt, `abtem.CustomScan`, `diffraction_patterns`), never a
simulate/ function, so a test comparing a stored sample against it checks stemdl's physics
rather than restating it.
"""

from __future__ import annotations

import abtem
import numpy as np
from ase import Atoms

from stemdl.simulate.sample import SampleRecord


def abtem_far_field(record: SampleRecord) -> np.ndarray:
    """(P, ky, kx) float64: abTEM's whole far field of a phonon-free record's specimen, one
    pattern per probe position, zero frequency at n // 2 (abTEM's fftshift)."""
    assert record.num_phonon_configs == 1 and record.phonon_sigma_a == 0
    atoms = Atoms(numbers=record.atomic_numbers, positions=record.positions_a,
                  cell=record.cell_a, pbc=True) * record.repetitions
    potential = abtem.Potential(atoms, gpts=record.gpts,
                                slice_thickness=(record.slice_thickness_a,) * record.num_slices,
                                parametrization=record.parametrization,
                                projection=record.projection)
    probe = abtem.Probe(energy=record.energy_ev, semiangle_cutoff=record.semiangle_mrad,
                        defocus=record.defocus_a, Cs=record.c30_a, tilt=record.tilt_mrad)
    waves = probe.multislice(potential, scan=abtem.CustomScan(record.probe_positions_a))
    full = np.asarray(waves.diffraction_patterns(max_angle=None).compute().array,
                      dtype=np.float64)
    return np.swapaxes(full, -1, -2)
