"""simulate/: atomic models in, CBED training samples out.

In: a `SimulationConfig` and a sample index. Out: a `Sample` (P CBED patterns, C projected
potential maps, and a `SampleRecord` of every parameter that determines them). Owns the
catalogue of crystal structures, zone-axis orientation, supercells, frozen phonons, and the
abTEM multislice physics on NumPy (CPU) or CuPy (GPU). Imports configs/ only (its typed
`SimulationConfig` and the units), nothing from datasets/ or train/.

Public API (imported lazily, so `import stemdl.simulate` stays instant and does not import
abTEM):
`simulate_sample(config, index, catalogue=None) -> Sample`, `build_catalogue(config) ->
Catalogue`, `warm_up(simulation)` (import abTEM and compile the config's kernels ahead of the
first sample), and the types `Catalogue`, `Material`, `CatalogueError`.

Modules, one concept each: `prototypes` (prototype crystals), `cif_source` (reading CIFs),
`structure_checks` (what makes a crystal unusable), `crystallography` (structure factors,
strongest reflection, d_hkl, touching disks), `orientation` (zone axis → orthogonal base cell),
`catalogue` (materials, ids, skips), `splits` (train/validation/test by material), `draws`
(per-sample random choices), `geometry` (supercell, grid, slices, scan), `device`, `physics`
(abTEM's potential and probe, the choice of multislice engine), `multislice` (stemdl's own
propagation over abTEM's physics arrays), `batched_multislice` (several samples of one grid
in one FFT batch), `smatrix` (the same patterns from one propagation per plane wave in the
aperture), `fft_plans` (cached in-place FFTs, CPU and GPU),
`target` (projected potential → target map), `sample_builder` (all of it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stemdl.simulate.catalogue import Catalogue, CatalogueError, Material, build_catalogue
    from stemdl.simulate.sample_builder import simulate_sample, warm_up

__all__ = ["Catalogue", "CatalogueError", "Material", "build_catalogue", "simulate_sample",
           "warm_up"]

_LAZY = {
    "simulate_sample": "stemdl.simulate.sample_builder",
    "build_catalogue": "stemdl.simulate.catalogue",
    "Catalogue": "stemdl.simulate.catalogue",
    "CatalogueError": "stemdl.simulate.catalogue",
    "Material": "stemdl.simulate.catalogue",
    "warm_up": "stemdl.simulate.sample_builder",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stemdl.simulate' has no attribute {name!r}")
