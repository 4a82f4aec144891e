"""Read a directory of CIFs into candidate crystals, skipping (never crashing on) bad files.

Every `*.cif` in the directory (sorted by name, so the result does not depend on the file
system's listing order) is read with `ase.io.read` and passed through `structure_checks`. A file
that cannot be parsed, or parses into something unphysical, becomes a `(source, reason)` entry
in the skipped list; the rest of the run goes on.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CifCrystal:
    """One readable CIF: its conventional cell and what the file says about it."""

    path: Path
    atoms: Atoms
    spacegroup: int  # international number from the file; 0 when the file gives none
    formula: str


def list_cifs(cif_dir: Path) -> tuple[list[Path], list[tuple[str, str]]]:
    """The CIF files of a directory, or a skip reason when there are none to read."""
    if not cif_dir.exists():
        return [], [(str(cif_dir), "cif_dir does not exist")]
    if not cif_dir.is_dir():
        return [], [(str(cif_dir), "cif_dir is not a directory")]
    paths = sorted(p for p in cif_dir.iterdir() if p.suffix.lower() == ".cif" and p.is_file())
    if not paths:
        return [], [(str(cif_dir), "cif_dir contains no *.cif files")]
    return paths, []


def _spacegroup_number(atoms: Atoms) -> int:
    spacegroup = atoms.info.get("spacegroup")
    number = getattr(spacegroup, "no", 0)
    return int(number) if isinstance(number, int) and 1 <= number <= 230 else 0


def read_cif(path: Path) -> CifCrystal:
    """Parse one CIF (first data block). Raises ValueError with a readable reason on failure."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ASE warns about every unusual tag; the checks decide
            atoms = read_first_block(path)
    except Exception as error:  # a parser can raise anything on garbage input
        text = str(error).strip()
        detail = text.splitlines()[0] if text else "no structure ASE can read"
        raise ValueError(f"not a readable CIF ({type(error).__name__}: {detail})") from None
    if not isinstance(atoms, Atoms):
        raise ValueError("not a readable CIF (no structure in the file)")
    atoms.pbc = True
    formula = atoms.get_chemical_formula(empirical=True) if len(atoms) else ""
    return CifCrystal(path, atoms, _spacegroup_number(atoms), formula)


def read_first_block(path: Path) -> Atoms:
    """The first data block of a CIF as Atoms (ASE's default would take the last)."""
    import ase.io

    return ase.io.read(path, index=0, format="cif")
