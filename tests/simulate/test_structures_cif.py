"""Untrusted CIFs: good files join the catalogue; bad ones are skipped with a logged reason."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from ase.build import bulk

from stemdl.configs.simulation import SimulationConfig
from stemdl.simulate.catalogue import Catalogue, CatalogueError, build_catalogue, make_catalogue

FLAT_CIF = """data_flat
_cell_length_a 0.0
_cell_length_b 0.0
_cell_length_c 0.0
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Si1 Si 0 0 0
"""


def _cif_config(simulation_config, cif_dir: Path, families: list[str] | None = None) -> SimulationConfig:
    return simulation_config(
        "tiny",
        structures__cif_dir=str(cif_dir),
        structures__families=["fcc"] if families is None else families,
        structures__materials_per_family=1,
    )


def _reasons(catalogue: Catalogue) -> dict[str, str]:
    return {Path(source).name: reason for source, reason in catalogue.skipped}


def test_good_and_bad_cifs(tmp_path: Path, caplog: pytest.LogCaptureFixture, write_cif, simulation_config) -> None:
    write_cif(tmp_path / "silicon.cif", bulk("Si", "diamond", a=5.43, cubic=True))
    (tmp_path / "garbage.cif").write_text("this is not a CIF\n#$%^&\n_cell_length_a abc\n")
    crowded = bulk("Cu", "fcc", a=3.61, cubic=True)
    crowded.positions[1] = crowded.positions[0] + [0.3, 0.0, 0.0]
    write_cif(tmp_path / "crowded.cif", crowded)
    write_cif(tmp_path / "huge.cif", bulk("Cu", "fcc", a=3.61, cubic=True) * (3, 3, 3))  # 108 > 64
    (tmp_path / "notes.txt").write_text("not a CIF by name: ignored")
    config = _cif_config(simulation_config, tmp_path)

    with caplog.at_level(logging.WARNING, logger="stemdl.simulate.catalogue"):
        catalogue = make_catalogue(config.structures, config.seed)

    ids = [m.material_id for m in catalogue]
    assert any(i.startswith("cif-silicon-") for i in ids)
    assert any(i.startswith("fcc-") for i in ids)  # prototypes still there
    silicon = next(m for m in catalogue if m.material_id.startswith("cif-silicon-"))
    assert silicon.formula == "Si" and silicon.family == "cif" and len(silicon.atoms) == 8
    reasons = _reasons(catalogue)
    assert set(reasons) == {"garbage.cif", "crowded.cif", "huge.cif"}
    assert reasons["garbage.cif"].startswith("not a readable CIF")
    assert "overlapping atoms" in reasons["crowded.cif"] and "0.300 Å" in reasons["crowded.cif"]
    assert "108 atoms" in reasons["huge.cif"] and "max_base_atoms=64" in reasons["huge.cif"]
    logged = caplog.text
    for name in reasons:
        assert f"skipped {tmp_path / name}" in logged


def test_flat_cell_and_empty_directory(tmp_path: Path, simulation_config) -> None:
    cif_dir = tmp_path / "cifs"
    cif_dir.mkdir()
    (cif_dir / "flat.cif").write_text(FLAT_CIF)
    catalogue = make_catalogue(_cif_config(simulation_config, cif_dir).structures, 0)
    assert "degenerate cell" in _reasons(catalogue)["flat.cif"]

    empty = tmp_path / "empty"
    empty.mkdir()
    catalogue = make_catalogue(_cif_config(simulation_config, empty).structures, 0)
    assert catalogue.skipped == ((str(empty), "cif_dir contains no *.cif files"),)
    assert len(catalogue) == 1  # the prototype


def test_no_usable_material_is_a_clear_error(tmp_path: Path, simulation_config) -> None:
    (tmp_path / "broken.cif").write_text("data_x\n_cell_length_a 1\n")
    config = _cif_config(simulation_config, tmp_path, families=[])
    with pytest.raises(
        CatalogueError, match=r"no usable material \(1 skipped: .*broken.cif: not a readable CIF"
    ):
        make_catalogue(config.structures, config.seed)


def test_catalogue_cache_sees_new_cif_files(tmp_path: Path, write_cif, simulation_config) -> None:
    config = _cif_config(simulation_config, tmp_path)
    write_cif(tmp_path / "a.cif", bulk("Al", "fcc", a=4.05, cubic=True))
    first = build_catalogue(config)
    assert build_catalogue(config) is first
    write_cif(tmp_path / "b.cif", bulk("Ni", "fcc", a=3.52, cubic=True))
    second = build_catalogue(config)
    assert len(second) == len(first) + 1


def test_low_symmetry_cifs_fall_back_to_the_unique_axis_or_are_skipped(tmp_path: Path, write_cif, simulation_config) -> None:
    from ase.spacegroup import crystal

    baddeleyite = crystal(
        ["Zr", "O", "O"],
        [(0.2754, 0.0395, 0.2083), (0.0700, 0.3317, 0.3447), (0.4496, 0.7569, 0.4792)],
        spacegroup=14,
        cellpar=[5.1505, 5.2116, 5.3173, 90, 99.23, 90],
    )
    triclinic = crystal(
        ["Cu", "S"],
        [(0.1, 0.2, 0.3), (0.6, 0.7, 0.2)],
        spacegroup=1,
        cellpar=[3.9, 4.3, 5.1, 82, 97, 104],
    )
    write_cif(tmp_path / "zro2.cif", baddeleyite)
    write_cif(tmp_path / "tric.cif", triclinic)
    config = _cif_config(simulation_config, tmp_path, families=[])
    catalogue = make_catalogue(config.structures, config.seed)
    zro2 = next(m for m in catalogue if m.material_id.startswith("cif-zro2-"))
    assert zro2.orientations[0].zone_axis == (0, 1, 0)  # the unique axis b is ⊥ a and c
    assert 0 < zro2.orientations[0].strain <= config.structures.max_orientation_strain
    assert "fell back to [0 1 0]" in zro2.orientation_notes[0]
    exact_only = config.structures.model_copy(
        update={"max_orientation_strain": 0.0, "families": ["fcc"]}
    )
    catalogue = make_catalogue(exact_only, config.seed)
    reasons = _reasons(catalogue)
    for name in ("zro2.cif", "tric.cif"):
        assert reasons[name].startswith("no zone axis can be oriented: [0 0 1] no orthogonal cell")
        assert (
            "[0 1 0]" in reasons[name]
            and "[1 0 0]" in reasons[name]
            and "strain 0" in reasons[name]
        )
