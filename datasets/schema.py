"""What a stemdl store contains: every array, its shape, dtype, dimension names and units.

This module is the schema and nothing else: no stores, no codecs, no I/O (those live in
`datasets/storage.py`). Everything is derived from a `StemdlConfig`, so a store can be checked
against the config recorded in its own attributes.

Layout, schema version 3 (N samples, S = `dataset.shard_size` samples per shard, K = ceil(N/S);
version 3 added the `tilt_mrad` columns of the mistilt):

* data, axis 0 = sample: `cbed` (N, P, H, W) and `potential` (N, C, H', W'), in the dtype and
  codec that `DatasetConfig` names;
* per-sample metadata packed into five arrays, each one column per named value:
  `record_int` (N, I) int64, `record_float` (N, F) float64, `record_str` (N, K) UTF-8 strings,
  `atoms` (N, max_base_atoms, 4) float64 [Z, x, y, z] (NaN-padded) and `probe_positions_a`
  (N, P, 2) float64. Every `SampleRecord` field and the bookkeeping values (`status`,
  `num_atoms`, `cbed_crc32c`, `potential_crc32c`, `failure_reason`) is a column (or a few:
  `extent_a_x`, `extent_a_y`, `cell_a_00` … `cell_a_22`) of one of them; see `FIELDS`;
* coordinates naming those columns: `record_int_field`, `record_float_field`,
  `record_str_field`, `atom_component` (tiny, unsharded, written once at planning), so
  `xarray.open_zarr` labels every column;
* the per-shard completion mask `shard_done` (K,), written last by the task owning the shard.

Why packed: every per-sample array is chunked one sample per chunk and sharded S samples per
shard, so one generation task owns exactly one file of every array (no locks). One array per
record field made that 43 files per shard (2.7 million for the paper preset); packed it is 8.
Read fields through `datasets.records.read_fields`, never by column position.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from stemdl.configs import DatasetConfig, StemdlConfig, StemdlError
from stemdl.simulate.sample import SampleRecord

SCHEMA_VERSION = 3
SAMPLE_DIM = "sample"
SHARD_DIM = "shard"

STATUS_MISSING, STATUS_OK, STATUS_FAILED = 0, 1, 2
STATUS_MEANINGS = "not_written ok failed"
STRING_FILL = ""

Role = Literal["data", "record", "bookkeeping", "coordinate"]
Per = Literal["sample", "shard", "coordinate"]

# The packed per-sample tables: array name -> (dtype, name of its column coordinate).
TABLES: dict[str, tuple[str, str]] = {
    "record_int": ("int64", "record_int_field"),
    "record_float": ("float64", "record_float_field"),
    "record_str": ("string", "record_str_field"),
}
ATOM_COMPONENTS = ("Z", "x", "y", "z")


@dataclass(frozen=True)
class ArraySpec:
    """One array of the store. `dims`/`shape` exclude the leading sample (or shard) axis;
    a coordinate array has no leading axis (`dims` is its one dimension, `values` its data)."""

    name: str
    dtype: str  # a NumPy dtype name, or "string" for variable-length UTF-8
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    units: str
    long_name: str
    role: Role
    fill_value: Any = 0
    per: Per = "sample"
    attrs: dict[str, Any] = field(default_factory=dict)
    values: tuple[Any, ...] | None = None

    @property
    def all_dims(self) -> tuple[str, ...]:
        if self.per == "coordinate":
            return self.dims
        return ((SAMPLE_DIM if self.per == "sample" else SHARD_DIM), *self.dims)

    def length(self, dataset: DatasetConfig) -> int:
        """The length of the leading axis: a row per sample or per shard (a coordinate array
        has no leading axis: 0)."""
        return {"shard": dataset.num_shards, "sample": dataset.num_samples}.get(self.per, 0)

    def attributes(self) -> dict[str, Any]:
        """The array attributes that make it self-describing (CF-style `units`, `long_name`)."""
        return {"long_name": self.long_name, "units": self.units, "role": self.role, **self.attrs}


@dataclass(frozen=True)
class FieldLayout:
    """Where one logical per-sample value lives: an array and, in a table, its columns.

    `shape` is the value's per-sample shape; `components` label its columns (column name =
    `name` for a scalar, `name_<component>` otherwise), in C order of `shape`.
    """

    name: str
    array: str
    components: tuple[str, ...]
    shape: tuple[int, ...]
    units: str
    long_name: str
    bookkeeping: bool = False

    @property
    def columns(self) -> tuple[str, ...]:
        if self.array not in TABLES:
            return ()
        return (self.name,) if not self.components else tuple(
            f"{self.name}_{c}" for c in self.components)


_XY = ("x", "y")
_XYZ = ("x", "y", "z")
_CELL = tuple(f"{i}{j}" for i in range(3) for j in range(3))

# name -> (array, components, shape, units, long name). Every SampleRecord field appears;
# `_check_record_coverage` fails at import if simulate/ adds a field this table lacks.
_FIELD_TABLE: dict[str, tuple[str, tuple[str, ...], tuple[int, ...], str, str]] = {
    "index": ("record_int", (), (), "1", "global sample index"),
    "seed": ("record_int", (), (), "1", "random seed of this sample's frozen phonons"),
    "material_id": ("record_str", (), (), "1", "stable material identifier"),
    "formula": ("record_str", (), (), "1", "chemical formula"),
    "split": ("record_str", (), (), "1", "train / validation / test (assigned per material)"),
    "spacegroup": ("record_int", (), (), "1", "international space group number"),
    "zone_axis": ("record_int", ("u", "v", "w"), (3,), "1", "zone axis [uvw] along the beam"),
    "cell_a": ("record_float", _CELL, (3, 3), "angstrom", "oriented base cell (rows)"),
    "atomic_numbers": ("atoms", ("Z",), (), "1", "atomic numbers of the base cell"),
    "positions_a": ("atoms", _XYZ, (3,), "angstrom", "Cartesian atom positions"),
    "repetitions": ("record_int", _XYZ, (3,), "1", "repetitions of the base cell along x, y, z"),
    "thickness_a": ("record_float", (), (), "angstrom", "simulated specimen thickness"),
    "extent_a": ("record_float", _XY, (2,), "angstrom", "lateral extent of the simulated cell"),
    "energy_ev": ("record_float", (), (), "eV", "electron kinetic energy"),
    "wavelength_a": ("record_float", (), (), "angstrom", "relativistic electron wavelength"),
    "semiangle_mrad": ("record_float", (), (), "mrad", "probe convergence semi-angle"),
    "defocus_a": ("record_float", (), (), "angstrom", "probe defocus"),
    "c30_a": ("record_float", (), (), "angstrom", "spherical aberration C3"),
    "tilt_mrad": ("record_float", _XY, (2,), "mrad",
                  "specimen/beam mistilt (x, y), applied in the multislice propagator"),
    "sampling_a": ("record_float", _XY, (2,), "angstrom", "real-space grid spacing"),
    "gpts": ("record_int", _XY, (2,), "1", "real-space grid points"),
    "reciprocal_sampling_inv_a": ("record_float", _XY, (2,), "1/angstrom",
                                  "reciprocal-space size of a stored pattern pixel"),
    "angular_sampling_mrad": ("record_float", _XY, (2,), "mrad",
                              "angular size of a stored pattern pixel"),
    "slice_thickness_a": ("record_float", (), (), "angstrom", "multislice slice thickness"),
    "num_slices": ("record_int", (), (), "1", "number of multislice slices"),
    "parametrization": ("record_str", (), (), "1", "atomic potential parametrization"),
    "projection": ("record_str", (), (), "1", "potential projection scheme"),
    "num_phonon_configs": ("record_int", (), (), "1", "frozen-phonon configurations averaged"),
    "phonon_sigma_a": ("record_float", (), (), "angstrom", "RMS frozen-phonon displacement"),
    "probe_positions_a": ("probe_positions_a", _XY, (2,), "angstrom", "probe positions (x, y)"),
    "scan_gpts": ("record_int", ("rows", "cols"), (2,), "1", "probe grid points (n_y, n_x)"),
    "detector_binning": ("record_int", (), (), "1", "detector sum-pool factor"),
    "target_region_a": ("record_float", ("x0", "y0", "x1", "y1"), (4,), "angstrom",
                        "target map region x0, y0, x1, y1"),
    "abtem_version": ("record_str", (), (), "1", "abTEM version that computed the sample"),
    "device": ("record_str", (), (), "1", "cpu or gpu: where the sample was computed"),
    "extra": ("record_str", (), (), "1", "extra per-sample values as a JSON object"),
}
_BOOKKEEPING_TABLE: dict[str, tuple[str, tuple[str, ...], tuple[int, ...], str, str]] = {
    "num_atoms": ("record_int", (), (), "1", "number of atoms in the base cell (valid rows of atoms)"),
    "status": ("record_int", (), (), "1", f"sample status: 0 1 2 = {STATUS_MEANINGS}"),
    "cbed_crc32c": ("record_int", (), (), "1", "CRC-32C of the sample's cbed bytes as stored"),
    "potential_crc32c": ("record_int", (), (), "1",
                         "CRC-32C of the sample's potential bytes as stored"),
    "failure_reason": ("record_str", (), (), "1", "why the simulation of a failed sample raised"),
}

FIELDS: dict[str, FieldLayout] = {
    name: FieldLayout(name, *row, bookkeeping=name in _BOOKKEEPING_TABLE)
    for name, row in {**_FIELD_TABLE, **_BOOKKEEPING_TABLE}.items()
}


def _check_record_coverage() -> None:
    missing = set(SampleRecord.field_names()) - set(_FIELD_TABLE)
    if missing:
        raise RuntimeError(f"datasets/schema.py has no column for SampleRecord fields {sorted(missing)}")


_check_record_coverage()


def table_columns(table: str) -> list[str]:
    """Column names of a packed table, in order (one entry per column)."""
    return [c for layout in FIELDS.values() if layout.array == table for c in layout.columns]


def column_index(table: str) -> dict[str, int]:
    return {name: i for i, name in enumerate(table_columns(table))}


def dimension_sizes(config: StemdlConfig) -> dict[str, int]:
    """Size of every named dimension for a `StemdlConfig` (the sample/shard axes excluded)."""
    sim = config.simulation
    (patterns, ky, kx), (sections, y, x) = sim.sample_shape.input_shape, sim.sample_shape.target_shape
    sizes = {
        "pattern": patterns,
        "ky": ky,
        "kx": kx,
        "depth_section": sections,
        "y": y,
        "x": x,
        "atom": sim.structures.max_base_atoms,
        "atom_component": len(ATOM_COMPONENTS),
        "xy": 2,
    }
    sizes.update({coord: len(table_columns(table)) for table, (_, coord) in TABLES.items()})
    return sizes


def _table_spec(table: str) -> ArraySpec:
    dtype, coord = TABLES[table]
    columns = [layout for layout in FIELDS.values() if layout.array == table]
    per_column = [(c, layout) for layout in columns for c in layout.columns]
    return ArraySpec(
        table, dtype, (coord,), (len(per_column),), "see column_units",
        f"per-sample {dtype} values, one column per name in {coord}", "record", fill_value=STRING_FILL if dtype == "string" else (
            float("nan") if dtype.startswith("float") else 0),
        attrs={"columns": [c for c, _ in per_column],
               "column_units": [layout.units for _, layout in per_column],
               "column_long_names": [layout.long_name for _, layout in per_column]},
    )


def _coordinate_spec(name: str, values: list[str], long_name: str) -> ArraySpec:
    return ArraySpec(name, "string", (name,), (len(values),), "1", long_name, "coordinate",
                     fill_value=STRING_FILL, per="coordinate", values=tuple(values))


def store_schema(config: StemdlConfig) -> dict[str, ArraySpec]:
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
        *(_table_spec(table) for table in TABLES),
        ArraySpec("atoms", "float64", ("atom", "atom_component"),
                  (sizes["atom"], sizes["atom_component"]), "see column_units",
                  "base-cell atoms [Z, x, y, z] (Cartesian, angstrom), NaN-padded to "
                  "max_base_atoms; record_int num_atoms says how many rows are real", "record",
                  fill_value=float("nan"),
                  attrs={"column_units": ["1", "angstrom", "angstrom", "angstrom"]}),
        ArraySpec("probe_positions_a", "float64", ("pattern", "xy"), (sizes["pattern"], 2),
                  "angstrom", FIELDS["probe_positions_a"].long_name, "record",
                  fill_value=float("nan")),
        *(_coordinate_spec(coord, table_columns(table), f"names of the columns of {table}")
          for table, (_, coord) in TABLES.items()),
        _coordinate_spec("atom_component", list(ATOM_COMPONENTS),
                         "components of an atom row: atomic number, x, y, z"),
        ArraySpec("shard_done", "uint8", (), (), "1",
                  "1 once every array of the shard is written (written last)", "bookkeeping",
                  per="shard"),
    ]
    return {spec.name: spec for spec in specs}


def sharded_arrays(schema: dict[str, ArraySpec]) -> list[ArraySpec]:
    """The per-sample arrays: one shard file each per shard of samples."""
    return [spec for spec in schema.values() if spec.per == "sample"]


def coordinate_arrays(schema: dict[str, ArraySpec]) -> list[ArraySpec]:
    return [spec for spec in schema.values() if spec.per == "coordinate"]


def units_table(schema: dict[str, ArraySpec]) -> dict[str, str]:
    """Units of every array and of every logical field (`energy_ev` → eV, …)."""
    units = {name: spec.units for name, spec in schema.items()}
    units.update({name: layout.units for name, layout in FIELDS.items()})
    return units


class ShardIndexError(StemdlError, IndexError):
    """A shard index outside the store's shards (e.g. a cluster job's task id given to
    `simulate_shard` for a store with fewer shards)."""


def shard_range(shard_index: int, shard_size: int, num_samples: int) -> tuple[int, int]:
    """Global sample indices [start, stop) of one shard; the last shard may be short."""
    num_shards = -(-num_samples // shard_size)
    if not 0 <= shard_index < num_shards:
        raise ShardIndexError(f"shard {shard_index} out of range: the store has {num_shards} "
                              f"shards (0 to {num_shards - 1})")
    start = shard_index * shard_size
    return start, min(start + shard_size, num_samples)


CHECKSUM_DEFINITION = (
    "cbed_crc32c[i] / potential_crc32c[i] (columns of record_int) = CRC-32C (Castagnoli) of "
    "sample i's array as stored: values in the stored dtype, little-endian, C order, no codec "
    "applied. Independent of compression and sharding, so a copy, a restaged store and any "
    "reader can check it. Each encoded chunk and each shard index also carries Zarr's crc32c "
    "codec, which locates corruption in a file."
)
