"""simulate/: atomic models in, CBED training samples out.

In: a `SimulationConfig` and a sample index. Out: a `Sample` (P CBED patterns, C projected
potential maps, and a `SampleRecord` of every parameter that determines them). Owns the
catalogue of crystal structures, zone-axis orientation, supercells, frozen phonons, and the
abTEM multislice physics on NumPy (CPU) or CuPy (GPU). Imports nothing from datasets/ or train/.
"""
