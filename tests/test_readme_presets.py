"""The README's preset table and its description of `small` agree with the preset files.

Why: the table once said `small` was "8 × 8 probes over 8 Å … 0.25 Å/px, 1024 samples" long
after the preset became 6.4 Å, 0.2 Å/px and 1536 samples (issue 22). Every figure a row states
is derived here from the preset as `load_config` validates it (probe grid, scan extent and step,
pattern and target pixels, target Å/px, energy, semi-angle range, mistilt, phonon
configurations, angular pixel and reach, cell size, samples), and a row holding a number that
no rule here checks fails too, so a figure added to the table must be taught to this test.
Timings (`~0.1 s a sample`) are measurements, not preset figures, and are the one exception.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from stemdl.configs import PRESETS, StemdlConfig, load_config
from stemdl.configs.units import wavelength_a

README = Path(__file__).resolve().parents[1] / "README.md"
HEADER = "| preset | use | sample | samples |"
NUMBER = r"(\d+(?:\.\d+)?)"
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹", "0123456789")

# One row as README.md had it before d85f968: what the test must refuse (test_old_row_fails).
OLD_SMALL_ROW = ("| `small` | default of `stemdl run` | 64 patterns (8 × 8 probes over 8 Å) of "
                 "33 × 33 px, 32 × 32 target (0.25 Å/px) | 1024 |")


def close(stated: str, value: float) -> bool:
    """`stated` is `value` written to the decimals it shows (half a unit of its last digit)."""
    decimals = len(stated.split(".")[1]) if "." in stated else 0
    return abs(float(stated) - value) <= 0.5 * 10.0 ** -decimals + 1e-9


def fixed(low: float, high: float, what: str) -> float:
    """The one value of a range the table states as a single figure."""
    assert low == high, f"the table states one {what}, the preset draws it from [{low}, {high}]"
    return low


def mrad_per_px(cfg: StemdlConfig) -> float:
    """Angular size of a stored pattern pixel: `detector.pixel_mrad` where set, else the
    coarsest native pixel λ / cell_xy_a, times the binning."""
    sim = cfg.simulation
    if sim.detector.pixel_mrad is not None:
        return sim.detector.pixel_mrad
    energy = fixed(sim.energy_ev.min, sim.energy_ev.max, "energy")
    return 1e3 * wavelength_a(energy) / sim.cell_xy_a * sim.detector.binning


def reach_mrad(cfg: StemdlConfig) -> float:
    """Angle of the outermost stored pixel centre from the optical axis."""
    return (cfg.simulation.detector.pattern_px[0] // 2) * mrad_per_px(cfg)


def side_a(cfg: StemdlConfig) -> float:
    return cfg.simulation.scan.side_a(cfg.simulation.cell_xy_a)


Check = Callable[[StemdlConfig, tuple[str, ...]], list[str]]


def expect(what: str, stated: str, value: float) -> list[str]:
    return [] if close(stated, value) else [f"{what}: the README says {stated}, the preset {value:g}"]


def check_pair(what: str, stated: tuple[str, ...], value: tuple[int, ...]) -> list[str]:
    pair = tuple(int(s) for s in stated)
    return [] if pair == tuple(value) else [f"{what}: the README says {pair}, the preset {value}"]


def spacing_fits(cfg: StemdlConfig, groups: tuple[str, ...]) -> list[str]:
    """'first-order disks of spacings ≥ d Å': the disk at λ/d, of the largest semi-angle, lies
    within the stored reach (and so does the bright-field disk)."""
    sim = cfg.simulation
    energy = fixed(sim.energy_ev.min, sim.energy_ev.max, "energy")
    edge = 1e3 * wavelength_a(energy) / float(groups[0]) + sim.semiangle_mrad.max
    if edge <= reach_mrad(cfg):
        return []
    return [f"disks of spacing {groups[0]} Å reach {edge:.1f} mrad, beyond the stored "
            f"{reach_mrad(cfg):.1f} mrad"]


def semiangle(cfg: StemdlConfig, groups: tuple[str, ...]) -> list[str]:
    value = cfg.simulation.semiangle_mrad
    if isinstance(value, str):
        return [f"semi-angle: the table says {groups[0]}–{groups[1]} mrad, the preset {value!r}"]
    return expect("semi-angle min (mrad)", groups[0], value.min) + expect(
        "semi-angle max (mrad)", groups[1], value.max)


def energy(cfg: StemdlConfig, groups: tuple[str, ...]) -> list[str]:
    sim = cfg.simulation
    return expect("energy (kV)", groups[0], fixed(sim.energy_ev.min, sim.energy_ev.max,
                                                  "energy") / 1e3)


def step(cfg: StemdlConfig, groups: tuple[str, ...]) -> list[str]:
    gy, gx = cfg.simulation.scan.gpts
    return expect("scan step y (Å)", groups[0], side_a(cfg) / gy) + expect(
        "scan step x (Å)", groups[0], side_a(cfg) / gx)


def target_pixel(cfg: StemdlConfig, groups: tuple[str, ...]) -> list[str]:
    ty, tx = cfg.simulation.target.target_px
    return expect("target pixel y (Å/px)", groups[0], side_a(cfg) / ty) + expect(
        "target pixel x (Å/px)", groups[0], side_a(cfg) / tx)


def cell(cfg: StemdlConfig, groups: tuple[str, ...]) -> list[str]:
    sim = cfg.simulation
    thickness = fixed(sim.thickness_a.min, sim.thickness_a.max, "thickness")
    return (expect("cell x (Å)", groups[0], sim.cell_xy_a)
            + expect("cell y (Å)", groups[1], sim.cell_xy_a)
            + expect("cell thickness (Å)", groups[2], thickness))


# (pattern, check) in the order they are matched; each match is blanked before the next rule
# runs, so "1.96 mrad/px" is not read again as a semi-angle.
RULES: tuple[tuple[str, Check], ...] = (
    (r"~\d+(?:\.\d+)? s a sample", lambda cfg, g: []),  # a timing, measured, not a preset figure
    (rf"{NUMBER} × {NUMBER} × {NUMBER} Å cells", cell),
    (rf"{NUMBER} mrad/px", lambda cfg, g: expect("angular pixel (mrad/px)", g[0],
                                                 mrad_per_px(cfg))),
    (rf"±{NUMBER} mrad", lambda cfg, g: expect("reach (mrad)", g[0], reach_mrad(cfg))),
    (rf"spacings ≥ {NUMBER} Å", spacing_fits),
    (rf"mistilt ≤ {NUMBER} mrad", lambda cfg, g: expect("mistilt max (mrad)", g[0],
                                                        cfg.simulation.tilt_mrad.max)),
    (rf"{NUMBER}–{NUMBER} mrad", semiangle),
    (rf"{NUMBER} kV", energy),
    (rf"{NUMBER} frozen phonons", lambda cfg, g: expect("phonon configurations", g[0],
                                                        cfg.simulation.phonons.num_configs)),
    (r"(\d+) × (\d+) probes", lambda cfg, g: check_pair("probe grid", g,
                                                        cfg.simulation.scan.gpts)),
    (r"(\d+) patterns", lambda cfg, g: expect("patterns per sample", g[0],
                                              cfg.simulation.num_patterns)),
    (rf"{NUMBER} Å steps", step),
    (rf"over {NUMBER} Å", lambda cfg, g: expect("scan extent (Å)", g[0], side_a(cfg))),
    (r"(\d+) × (\d+) px", lambda cfg, g: check_pair("pattern px", g,
                                                    cfg.simulation.detector.pattern_px)),
    (r"(\d+) × (\d+) target", lambda cfg, g: check_pair("target px", g,
                                                        cfg.simulation.target.target_px)),
    (rf"\({NUMBER} Å/px\)", target_pixel),
)


def parse_samples(text: str) -> int:
    """'1536', '1,536' or '10⁶'."""
    text = text.strip().replace(",", "")
    if text.startswith("10") and len(text) > 2 and text[2] in "⁰¹²³⁴⁵⁶⁷⁸⁹":
        return 10 ** int(text[2:].translate(SUPERSCRIPTS))
    return int(text)


def split_row(line: str) -> list[str]:
    """The cells of one markdown table row, the preset name without its backticks."""
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
    return [cells[0].strip("`"), *cells[1:]]


def table_rows(readme: str) -> dict[str, list[str]]:
    """preset name -> its cells, from the markdown table under HEADER."""
    lines = readme.splitlines()
    start = lines.index(HEADER)
    rows: dict[str, list[str]] = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = split_row(line)
        rows[cells[0]] = cells
    return rows


def row_problems(cells: list[str]) -> list[str]:
    """Every disagreement between one table row and its preset, and every figure left unchecked."""
    name, use, sample, samples = cells
    cfg = load_config(name)
    problems = []
    if parse_samples(samples) != cfg.dataset.num_samples:
        problems.append(f"samples: the table says {samples}, the preset "
                        f"{cfg.dataset.num_samples}")
    text = f"{use} | {sample}"
    for pattern, check in RULES:
        for match in re.finditer(pattern, text):
            problems += check(cfg, match.groups())
        text = re.sub(pattern, " ", text)
    if re.search(r"\d", text):
        problems.append(f"figures no rule of tests/test_readme_presets.py checks: {text!r}")
    return [f"{name}: {problem}" for problem in problems]


def test_table_lists_every_preset() -> None:
    assert sorted(table_rows(README.read_text())) == sorted(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_table_row_matches_preset(name: str) -> None:
    rows = table_rows(README.read_text())
    assert name in rows, f"the README's preset table has no row for {name!r}"
    problems = row_problems(rows[name])
    assert not problems, "\n".join(problems)


def test_old_row_fails() -> None:
    """The rules catch the contradiction issue 22 found (so they can fail at all)."""
    problems = "\n".join(row_problems(split_row(OLD_SMALL_ROW)))
    assert "scan extent (Å): the README says 8" in problems
    assert "target pixel y (Å/px): the README says 0.25" in problems
    assert "samples: the table says 1024" in problems


def test_unchecked_figure_fails() -> None:
    """A number no rule knows is reported, not silently passed."""
    cells = ["small", "default", "64 patterns of 33 × 33 px, 7 widgets", "1536"]
    assert any("no rule" in problem for problem in row_problems(cells))


def test_run_section_describes_small() -> None:
    """The sentence under "## Run" that says what `stemdl run` simulates."""
    from stemdl.simulate.catalogue import build_catalogue

    cfg = load_config("small")
    sim = cfg.simulation
    readme = README.read_text().replace("\n", " ")
    match = re.search(
        r"simulates (\d+) samples \((\d+) × (\d+) CBED patterns of (\d+) × (\d+) px scanned over "
        rf"a {NUMBER} Å square of one of (\d+) crystals from (\d+) prototype families at (\d+) "
        rf"zone axes.*?on (\d+) × (\d+) px,\s+{NUMBER} Å a pixel\)", readme)
    assert match, "the Run section no longer describes the small preset in the expected words"
    (samples, gy, gx, py, px, extent, crystals, families, axes, ty, tx, pixel) = match.groups()
    problems = (
        expect("samples", samples, cfg.dataset.num_samples)
        + check_pair("probe grid", (gy, gx), sim.scan.gpts)
        + check_pair("pattern px", (py, px), sim.detector.pattern_px)
        + expect("scan extent (Å)", extent, side_a(cfg))
        + expect("crystals", crystals, len(build_catalogue(sim).materials))
        + expect("prototype families", families, len(sim.structures.families))
        + expect("zone axes", axes, len(sim.structures.zone_axes))
        + check_pair("target px", (ty, tx), sim.target.target_px)
        + expect("target pixel (Å/px)", pixel, side_a(cfg) / sim.target.target_px[0])
    )
    step_match = re.search(rf"the (\d+) × (\d+) scan of {NUMBER} Å steps", readme)
    assert step_match, "the Run section no longer names the scan iCoM integrates"
    problems += check_pair("iCoM scan grid", step_match.groups()[:2], sim.scan.gpts)
    problems += expect("iCoM scan step (Å)", step_match.group(3), side_a(cfg) / sim.scan.gpts[0])
    assert not problems, "\n".join(problems)
