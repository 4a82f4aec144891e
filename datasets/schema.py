"""What a stemdl store contains: every array, its shape, dtype, dimension names and units.

This module is the schema and nothing else: no stores, no codecs, no I/O (those live in
`datasets/storage.py`). Everything is derived from a `StemdlConfig`, so a store can be checked
against the config recorded in its own attributes.

Layout (N samples, S = `dataset.shard_size` samples per shard, K = ceil(N / S) shards):

* data arrays, axis 0 = sample: `cbed` (N, P, H, W) and `potential` (N, C, H', W'), stored in
  the dtype and codec that `DatasetConfig` names;
* one record array per field of `simulate.sample.SampleRecord` (ragged atoms padded to
  `simulation.structures.max_base_atoms`, with `num_atoms`; `extra` as a JSON string);
* bookkeeping: per-sample `status` (0 not written, 1 ok, 2 failed), `failure_reason`,
  `cbed_crc32c` / `potential_crc32c` (see `datasets/checksum.py`), and the per-shard completion
  mask `shard_done` (K,), written last by the task that owns the shard.

Every per-sample array is chunked one sample per chunk and sharded S samples per shard, so one
generation task owns exactly one file of every array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from simulate.sample import SampleRecord

SCHEMA_VERSION = 1
SAMPLE_DIM = "sample"
SHARD_DIM = "shard"

STATUS_MISSING, STATUS_OK, STATUS_FAILED = 0, 1, 2
STATUS_MEANINGS = "not_written ok failed"

Role = Literal["data", "record", "bookkeeping"]


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store. `dims`/`shape` exclude the leading sample (or shard) axis."""

    name: str
    dtype: str  # a NumPy dtype name, or "string" for variable-length UTF-8
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    units: str
    long_name: str
    role: Role
    fill_value: Any = 0
    per: Literal["sample", "shard"] = "sample"
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def all_dims(self) -> tuple[str, ...]:
        return ((SAMPLE_DIM if self.per == "sample" else SHARD_DIM), *self.dims)

    def attributes(self) -> dict[str, Any]:
        """The array attributes that make it self-describing (CF-style `units`, `long_name`)."""
        return {"long_name": self.long_name, "units": self.units, "role": self.role, **self.attrs}


# field name -> (dtype, dims without the sample axis, units, long name).
# Dimension sizes come from `dimension_sizes(config)`. Every SampleRecord field appears here;
# `_check_record_coverage` fails at import if simulate/ adds a field this table lacks.
_RECORD_TABLE: dict[str, tuple[str, tuple[str, ...], str, str]] = {
    "index": ("int64", (), "1", "global sample index"),
    "seed": ("uint64", (), "1", "random seed of this sample"),
    "material_id": ("string", (), "1", "stable material identifier"),
    "formula": ("string", (), "1", "chemical formula"),
    "split": ("string", (), "1", "train / validation / test (assigned per material)"),
    "spacegroup": ("int16", (), "1", "international space group number"),
    "zone_axis": ("int32", ("uvw",), "1", "zone axis [uvw] along the beam"),
    "cell_a": ("float64", ("cell_vector", "xyz"), "angstrom", "oriented base cell (rows)"),
    "atomic_numbers": ("int16", ("atom",), "1", "atomic numbers of the base cell, 0-padded"),
    "num_atoms": ("int32", (), "1", "number of atoms in the base cell (valid atom entries)"),
    "positions_a": ("float64", ("atom", "xyz"), "angstrom", "Cartesian atom positions, NaN-padded"),
    "repetitions": ("int32", ("xyz",), "1", "repetitions of the base cell along x, y, z"),
    "thickness_a": ("float64", (), "angstrom", "simulated specimen thickness"),
    "extent_a": ("float64", ("xy",), "angstrom", "lateral extent of the simulated cell"),
    "energy_ev": ("float64", (), "eV", "electron kinetic energy"),
    "wavelength_a": ("float64", (), "angstrom", "relativistic electron wavelength"),
    "semiangle_mrad": ("float64", (), "mrad", "probe convergence semi-angle"),
    "defocus_a": ("float64", (), "angstrom", "probe defocus"),
    "c30_a": ("float64", (), "angstrom", "spherical aberration C3"),
    "sampling_a": ("float64", ("xy",), "angstrom", "real-space grid spacing"),
    "gpts": ("int32", ("xy",), "1", "real-space grid points"),
    "reciprocal_sampling_inv_a": (
        "float64", ("xy",), "1/angstrom", "reciprocal-space size of a stored pattern pixel"),
    "angular_sampling_mrad": ("float64", ("xy",), "mrad", "angular size of a stored pattern pixel"),
    "slice_thickness_a": ("float64", (), "angstrom", "multislice slice thickness"),
    "num_slices": ("int32", (), "1", "number of multislice slices"),
    "parametrization": ("string", (), "1", "atomic potential parametrization"),
    "projection": ("string", (), "1", "potential projection scheme"),
    "num_phonon_configs": ("int32", (), "1", "frozen-phonon configurations averaged"),
    "phonon_sigma_a": ("float64", (), "angstrom", "RMS frozen-phonon displacement per axis"),
    "probe_positions_a": ("float64", ("pattern", "xy"), "angstrom", "probe positions (x, y)"),
    "scan_gpts": ("int32", ("xy",), "1", "probe grid points"),
    "detector_binning": ("int32", (), "1", "detector sum-pool factor"),
    "target_region_a": ("float64", ("bound",), "angstrom", "target map region x0, y0, x1, y1"),
    "abtem_version": ("string", (), "1", "abTEM version that computed the sample"),
    "device": ("string", (), "1", "cpu or gpu: where the sample was computed"),
    "extra": ("string", (), "1", "extra per-sample values as a JSON object"),
}

# Derived columns that are not SampleRecord fields.
DERIVED_RECORD_FIELDS: tuple[str, ...] = ("num_atoms",)
STRING_FILL = ""


def _check_record_coverage() -> None:
    missing = set(SampleRecord.field_names()) - set(_RECORD_TABLE)
    if missing:
        raise RuntimeError(f"datasets/schema.py has no array for SampleRecord fields {sorted(missing)}")


_check_record_coverage()


def dimension_sizes(config: Any) -> dict[str, int]:
    """Size of every named dimension for a `StemdlConfig` (the sample/shard axes excluded)."""
    sim = config.simulation
    return {
        "pattern": sim.num_patterns,
        "ky": sim.detector.pattern_px[0],
        "kx": sim.detector.pattern_px[1],
        "depth_section": sim.target.depth_sections,
        "y": sim.target.target_px[0],
        "x": sim.target.target_px[1],
        "atom": sim.structures.max_base_atoms,
        "xyz": 3,
        "uvw": 3,
        "cell_vector": 3,
        "xy": 2,
        "bound": 4,
    }


def _record_fill(dtype: str) -> Any:
    if dtype == "string":
        return STRING_FILL
    if dtype.startswith("float"):
        return float("nan")
    return 0


def store_schema(config: Any) -> dict[str, ArraySpec]:
    """Every array of a store made with `config`, by name, in a fixed order."""
    sizes = dimension_sizes(config)
    sim, ds = config.simulation, config.dataset
    specs: list[ArraySpec] = [
        ArraySpec(
            "cbed", ds.cbed.dtype, ("pattern", "ky", "kx"),
            (sizes["pattern"], sizes["ky"], sizes["kx"]), "1",
            "CBED intensity: fraction of the incident beam per detector pixel", "data",
            attrs={"valid_min": 0.0, "valid_max": 1.0, "scan_gpts": list(sim.scan.gpts),
                   "pattern_order": "row-major over the probe grid (see probe_positions_a)"},
        ),
        ArraySpec(
            "potential", ds.potential.dtype, ("depth_section", "y", "x"),
            (sizes["depth_section"], sizes["y"], sizes["x"]), "V*angstrom",
            "projected electrostatic potential of the scanned region", "data",
        ),
    ]
    for name, (dtype, dims, units, long_name) in _RECORD_TABLE.items():
        shape = tuple(sizes[d] for d in dims)
        specs.append(ArraySpec(name, dtype, dims, shape, units, long_name, "record",
                               fill_value=_record_fill(dtype)))
    specs += [
        ArraySpec("status", "int8", (), (), "1", "sample status", "bookkeeping",
                  attrs={"flag_values": [STATUS_MISSING, STATUS_OK, STATUS_FAILED],
                         "flag_meanings": STATUS_MEANINGS}),
        ArraySpec("failure_reason", "string", (), (), "1",
                  "why the simulation of a failed sample raised", "bookkeeping",
                  fill_value=STRING_FILL),
        ArraySpec("cbed_crc32c", "uint32", (), (), "1",
                  "CRC-32C of the sample's cbed bytes as stored (dtype, little-endian, C order)",
                  "bookkeeping"),
        ArraySpec("potential_crc32c", "uint32", (), (), "1",
                  "CRC-32C of the sample's potential bytes as stored (dtype, little-endian, C order)",
                  "bookkeeping"),
        ArraySpec("shard_done", "uint8", (), (), "1",
                  "1 once every array of the shard is written (written last)", "bookkeeping",
                  per="shard"),
    ]
    return {spec.name: spec for spec in specs}


def sharded_arrays(schema: dict[str, ArraySpec]) -> list[ArraySpec]:
    """The per-sample arrays: one shard file each per shard of samples."""
    return [spec for spec in schema.values() if spec.per == "sample"]


def record_arrays(schema: dict[str, ArraySpec]) -> list[ArraySpec]:
    return [spec for spec in schema.values() if spec.role == "record"]


def units_table(schema: dict[str, ArraySpec]) -> dict[str, str]:
    return {name: spec.units for name, spec in schema.items()}


def shard_range(shard_index: int, shard_size: int, num_samples: int) -> tuple[int, int]:
    """Global sample indices [start, stop) of one shard; the last shard may be short."""
    num_shards = -(-num_samples // shard_size)
    if not 0 <= shard_index < num_shards:
        raise IndexError(f"shard {shard_index} out of range: the store has {num_shards} shards")
    start = shard_index * shard_size
    return start, min(start + shard_size, num_samples)


CHECKSUM_DEFINITION = (
    "cbed_crc32c[i] / potential_crc32c[i] = CRC-32C (Castagnoli) of sample i's array as stored: "
    "values in the stored dtype, little-endian, C order, no codec applied. Independent of "
    "compression and sharding, so a copy, a restaged store and any reader can check it. Each "
    "encoded chunk and each shard index also carries Zarr's crc32c codec, which locates "
    "corruption in a file."
)
