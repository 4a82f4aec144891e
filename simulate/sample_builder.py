"""`simulate_sample(config, index)`: one training sample and the record that recomputes it.

A sample is a pure function of (config, index): the random choices come from
`draws.draw_sample`, the crystal from the cached catalogue, the specimen and grid from
`geometry.plan_geometry`, the physics from `physics`, the target from `target`. The
`SampleRecord` holds every number those steps used, so `tests/simulate/test_physics_reference.py` can
rebuild the sample with plain abTEM calls from the record alone.

`extra` carries the target smoothing σ (`target_smoothing_px`, needed to recompute the target;
the pattern and target sizes and the number of depth sections are the array shapes) and what is
useful but not needed to recompute: the requested (unrounded) thickness, the orientation strain,
whether the zone axis fell back, l* (d_hkl planes per base period), for `semiangle_mrad:
touching` the |g| and (h, k) of the reflection whose disks touch, the multislice engine
(`engine_code`, `physics.ENGINE_CODES`: 0 abTEM, 1 stemdl; same patterns to float32
rounding), and with `slice_thickness_a: d_hkl` the z shift already applied to the recorded
positions (`slice_z_shift_a`, informational: the record's positions are the simulated ones),
and with `reduced_grid_margin` the margin and the multislice grid (`multislice_gpts_x/y`).
"""

from __future__ import annotations

import numpy as np

from stemdl.configs.simulation import SimulationConfig
from stemdl.configs.units import ANTIALIAS_FRACTION, wavelength_a
from stemdl.simulate.catalogue import Catalogue, build_catalogue
from stemdl.simulate.crystallography import (
    planes_per_period,
    strongest_zolz_reflection,
    structure_factors,
    touching_semiangle_mrad,
)
from stemdl.simulate.detector_pixels import rebin, rebin_matrices
from stemdl.simulate.device import configure_abtem, resolve_device
from stemdl.simulate.draws import draw_sample
from stemdl.simulate.geometry import (
    centre_planes_in_slices,
    plan_geometry,
    reduced_gpts,
    specimen_atoms,
)
from stemdl.simulate.orientation import OrientedCell
from stemdl.simulate.physics import (
    ENGINE_CODES,
    PotentialSettings,
    ProbeSettings,
    build_potential,
    cbed_patterns,
    projected_potential_sections,
)
from stemdl.simulate.sample import Sample, SampleRecord
from stemdl.simulate.target import resample_region


def _touching(
    base: OrientedCell, parametrization: str, wavelength: float, sampling_a: tuple[float, float]
) -> tuple[float, dict[str, float]]:
    """Semi-angle at which the disks of the strongest zero-order reflection touch."""
    # α = λ|g|/2 must stay inside abTEM's antialiased band, α < (2/3)·λ/(2Δx): |g| < (2/3)/Δx.
    max_g = 0.999 * ANTIALIAS_FRACTION / max(sampling_a)
    try:
        reflection = strongest_zolz_reflection(base.atoms, parametrization, max_g_inv_a=max_g)
    except ValueError as error:
        raise ValueError(
            f"semiangle_mrad: touching is impossible for {base.zone_axis} at grid spacing "
            f"{max(sampling_a):.3f} Å: {error}; use a finer sampling_a or a numeric semi-angle"
        ) from None
    semiangle = touching_semiangle_mrad(reflection.g_inv_a, wavelength)
    extra = {
        "touching_g_inv_a": reflection.g_inv_a,
        "touching_h": float(reflection.hkl[0]),
        "touching_k": float(reflection.hkl[1]),
    }
    return semiangle, extra


def warm_up(simulation: SimulationConfig | None = None) -> None:
    """Import abTEM and, given the config, compile the kernels its samples need: seconds that
    a Dask worker spends while the client still builds the catalogue, instead of in its first
    task.

    Importing abTEM takes ~2.5 s on the project's VM (numba compiles some kernels then); the
    scattering-factor and projected-potential kernels of the config's parametrization and
    projection are compiled on first use, another ~1.5 s of the first sample. A one-atom
    potential on a 32² grid, with the same settings and device, and one structure factor
    (the touching semi-angle's scattering factors) compile them in ~0.6 s.
    """
    import abtem
    from ase import Atoms

    if simulation is None:
        return
    configure_abtem()  # the same precision (and so the same kernel signatures) as a sample
    one_atom = Atoms("Si", positions=[(2.0, 2.0, 1.0)], cell=(4.0, 4.0, 2.0))
    abtem.Potential(one_atom, gpts=32, slice_thickness=1.0,
                    parametrization=simulation.parametrization,
                    projection=simulation.projection,
                    device=resolve_device(simulation.device)).build(lazy=False)
    structure_factors(one_atom, np.array([[1, 0, 0]]), simulation.parametrization)  # f(g)


def simulate_sample(
    config: SimulationConfig, index: int, catalogue: Catalogue | None = None
) -> Sample:
    """Simulate sample `index` of `config` (CBED stack, projected-potential target, record)."""
    if catalogue is None:
        catalogue = build_catalogue(config)
    draws = draw_sample(config, index, catalogue.material_splits())
    material = catalogue[draws.material_index]
    option = draws.orientation_option(len(material.orientations))
    base = material.orientations[option]
    device = resolve_device(config.device)

    planes = planes_per_period(base.atoms, config.parametrization)
    geometry = plan_geometry(config, base.lengths_a, draws.thickness_a, planes,
                             draws.scan_shift_a)
    wavelength = wavelength_a(draws.energy_ev)
    extra: dict[str, float] = {
        "requested_thickness_a": draws.thickness_a,
        "orientation_strain": base.strain,
        "zone_axis_fell_back": float(bool(material.orientation_notes[option])),
        "planes_per_period": float(planes),
        "target_smoothing_px": config.target.smoothing_px,
    }
    if draws.semiangle_mrad is None:
        semiangle, touching = _touching(
            base, config.parametrization, wavelength, geometry.sampling_a
        )
        extra.update(touching)
    else:
        semiangle = draws.semiangle_mrad

    cell = np.array(base.atoms.cell.array, dtype=np.float64)
    numbers = np.array(base.atoms.numbers, dtype=np.int64)
    positions = np.array(base.atoms.positions, dtype=np.float64)
    if config.slice_thickness_a == "d_hkl":  # atomic planes mid-slice, not on slice boundaries
        positions = centre_planes_in_slices(positions, base.lengths_a[2], geometry.slice_thickness_a)
        extra["slice_z_shift_a"] = geometry.slice_thickness_a / 2
    atoms = specimen_atoms(cell, numbers, positions, geometry.repetitions)
    potential_settings = PotentialSettings(
        gpts=geometry.gpts,
        slice_thicknesses_a=(geometry.slice_thickness_a,) * geometry.num_slices,
        parametrization=config.parametrization,
        projection=config.projection,
        num_phonon_configs=config.phonons.num_configs,
        phonon_sigma_a=config.phonons.sigma_a,
        phonon_seed=draws.phonon_seed,
    )
    probe = ProbeSettings(draws.energy_ev, semiangle, draws.defocus_a, draws.c30_a, draws.tilt_mrad)
    configure_abtem()
    potential = build_potential(atoms, potential_settings, device)
    detector = config.detector
    window_px = tuple(n * detector.binning for n in detector.pattern_px)  # (ky, kx), native
    rebinning = None
    if detector.pixel_mrad is not None:  # one angular pixel for every sample
        native_mrad = (1e3 * wavelength / geometry.extent_a[1], 1e3 * wavelength / geometry.extent_a[0])
        window_px, rebinning = rebin_matrices(native_mrad, detector.pixel_mrad,
                                              tuple(detector.pattern_px))
        extra.update(detector_ratio_y=detector.pixel_mrad / native_mrad[0],
                     detector_ratio_x=detector.pixel_mrad / native_mrad[1])
    multislice_gpts = None
    if config.reduced_grid_margin is not None:  # approximate: see SimulationConfig
        window_xy = (window_px[1], window_px[0])
        aperture_inv_a = semiangle * 1e-3 / wavelength
        multislice_gpts = reduced_gpts(
            geometry.gpts, geometry.extent_a, window_xy, aperture_inv_a, config.reduced_grid_margin
        )
        extra.update(
            reduced_grid_margin=config.reduced_grid_margin,
            multislice_gpts_x=float(multislice_gpts[0]),
            multislice_gpts_y=float(multislice_gpts[1]),
        )
    cbed = cbed_patterns(
        potential,
        probe,
        geometry.probe_positions_a,
        window_px if rebinning is not None else detector.pattern_px,
        1 if rebinning is not None else detector.binning,
        device,
        config.engine,
        multislice_gpts,
    )
    if rebinning is not None:
        cbed = rebin(cbed, rebinning)
    extra["engine_code"] = ENGINE_CODES[config.engine]
    sections = projected_potential_sections(potential, config.target.depth_sections)
    target = resample_region(
        sections,
        geometry.sampling_a,
        geometry.target_region_a,
        config.target.target_px,
        config.target.smoothing_px,
    )

    import abtem

    binning = detector.binning
    if detector.pixel_mrad is None:
        reciprocal = (binning / geometry.extent_a[0], binning / geometry.extent_a[1])
    else:
        reciprocal = (detector.pixel_mrad / (1e3 * wavelength),) * 2
    record = SampleRecord(
        index=index,
        seed=draws.phonon_seed,
        material_id=material.material_id,
        formula=material.formula,
        split=catalogue.split_of(material.material_id),
        spacegroup=material.spacegroup,
        zone_axis=base.zone_axis,
        cell_a=cell,
        atomic_numbers=numbers,
        positions_a=positions,
        repetitions=geometry.repetitions,
        thickness_a=geometry.thickness_a,
        extent_a=geometry.extent_a,
        energy_ev=draws.energy_ev,
        wavelength_a=wavelength,
        semiangle_mrad=semiangle,
        defocus_a=draws.defocus_a,
        c30_a=draws.c30_a,
        sampling_a=geometry.sampling_a,
        gpts=geometry.gpts,
        reciprocal_sampling_inv_a=reciprocal,
        angular_sampling_mrad=(1e3 * wavelength * reciprocal[0], 1e3 * wavelength * reciprocal[1]),
        slice_thickness_a=geometry.slice_thickness_a,
        num_slices=geometry.num_slices,
        parametrization=config.parametrization,
        projection=config.projection,
        num_phonon_configs=config.phonons.num_configs,
        phonon_sigma_a=config.phonons.sigma_a,
        probe_positions_a=geometry.probe_positions_a,
        scan_gpts=config.scan.gpts,
        detector_binning=binning,
        target_region_a=geometry.target_region_a,
        abtem_version=abtem.__version__,
        device=device,
        tilt_mrad=draws.tilt_mrad,
        extra=extra,
    )
    return Sample(cbed=cbed, potential=target.astype(np.float32), record=record)
