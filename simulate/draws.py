"""Per-sample random choices: a pure function of (config seed, sample index).

`rng = default_rng(SeedSequence([config.seed, index]))` draws, in this fixed order: the split
(with probabilities `structures.split_fractions`, renormalised over the splits that have
materials) and a material uniformly within it, the zone-axis option (uniform
over the configured axes), the thickness, energy, semi-angle, defocus and C3 (uniform over the
configured ranges; a fixed value is a range of width 0). Every value is drawn even when its range
is fixed, so changing one range never shifts the others. The frozen-phonon seed comes from a
separate stream, `SeedSequence([config.seed, index, 1])` (its first 32-bit word), and is
recorded as `SampleRecord.seed`. The scan's shift from the centre (x, y; uniform in
±`scan.shift_a`) comes from another, `SeedSequence([config.seed, index, 2])`, so adding it
changed no other draw of any existing config. The mistilt (magnitude uniform in
`tilt_mrad`, azimuth uniform in [0, 2π), in that order) comes from a fourth,
`SeedSequence([config.seed, index, 3])`, for the same reason; a fixed zero range gives (0, 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stemdl.configs.simulation import Range, SimulationConfig
from stemdl.simulate.sample import SPLITS


@dataclass(frozen=True)
class SampleDraws:
    material_index: int
    orientation_fraction: float  # in [0, 1): picks one of the material's zone-axis options
    thickness_a: float  # requested; the simulated one is rounded to whole base cells
    energy_ev: float
    semiangle_mrad: float | None  # None: "touching", set from the structure
    defocus_a: float
    c30_a: float
    phonon_seed: int
    scan_shift_a: tuple[float, float] = (0.0, 0.0)  # (dx, dy) of the scanned square
    tilt_mrad: tuple[float, float] = (0.0, 0.0)  # (x, y) mistilt, abTEM's probe tilt

    def orientation_option(self, num_options: int) -> int:
        """Index of the zone-axis option, uniform over `num_options`."""
        return min(int(self.orientation_fraction * num_options), num_options - 1)


def sample_seed_sequence(config_seed: int, index: int) -> np.random.SeedSequence:
    if index < 0:
        raise ValueError(f"sample index must be >= 0, got {index}")
    return np.random.SeedSequence([config_seed, index])


def _uniform(rng: np.random.Generator, value: Range) -> float:
    return float(rng.uniform(value.min, value.max))


def _draw_material(
    rng: np.random.Generator, fractions: Sequence[float], material_splits: Sequence[str]
) -> int:
    """Split first, then a material within it: why not uniform over all materials? With few
    materials (a one-material test split, say) a uniform draw can leave a split with no samples;
    drawing the split by its configured fraction keeps every split's share of samples."""
    members = {split: [i for i, s in enumerate(material_splits) if s == split] for split in SPLITS}
    weights = np.array([f if members[s] else 0.0 for s, f in zip(SPLITS, fractions, strict=True)])
    if not material_splits or weights.sum() <= 0:
        raise ValueError("cannot draw a material: the catalogue has no material in any split")
    split = SPLITS[int(rng.choice(len(SPLITS), p=weights / weights.sum()))]
    return members[split][int(rng.integers(len(members[split])))]


def draw_sample(
    config: SimulationConfig, index: int, material_splits: Sequence[str]
) -> SampleDraws:
    """Draw the random parameters of sample `index` (see the module docstring).

    `material_splits[i]` is the split of catalogue material i.
    """
    sequence = sample_seed_sequence(config.seed, index)
    rng = np.random.default_rng(sequence)
    material_index = _draw_material(rng, config.structures.split_fractions, material_splits)
    orientation_fraction = float(rng.uniform())
    thickness_a = _uniform(rng, config.thickness_a)
    energy_ev = _uniform(rng, config.energy_ev)
    if config.semiangle_mrad == "touching":
        rng.uniform()  # keep the stream aligned with the ranged case
        semiangle = None
    else:
        semiangle = _uniform(rng, config.semiangle_mrad)  # type: ignore[arg-type]
    defocus_a = _uniform(rng, config.defocus_a)
    c30_a = _uniform(rng, config.c30_a)
    phonon_stream = np.random.SeedSequence([config.seed, index, 1])
    phonon_seed = int(phonon_stream.generate_state(1, dtype=np.uint32)[0])
    shift = np.random.default_rng(np.random.SeedSequence([config.seed, index, 2])).uniform(
        -config.scan.shift_a, config.scan.shift_a, size=2)
    tilt_rng = np.random.default_rng(np.random.SeedSequence([config.seed, index, 3]))
    magnitude = _uniform(tilt_rng, config.tilt_mrad)
    azimuth = float(tilt_rng.uniform(0.0, 2 * np.pi))
    tilt = (magnitude * float(np.cos(azimuth)), magnitude * float(np.sin(azimuth)))
    return SampleDraws(
        material_index,
        orientation_fraction,
        thickness_a,
        energy_ev,
        semiangle,
        defocus_a,
        c30_a,
        phonon_seed,
        (float(shift[0]), float(shift[1])),
        tilt,
    )
