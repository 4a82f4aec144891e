"""Physical constants and conversions used by the config checks and the recorded metadata.

Kept free of abTEM imports so that validating a config is instant; `tests/configs/test_config.py`
checks `wavelength_a` against abTEM's own `energy2wavelength`.
"""

from __future__ import annotations

import math

# abTEM keeps spatial frequencies below 2/3 of the Nyquist frequency (its default
# `antialias.cutoff`); the largest representable scattering angle is therefore λ/(3Δx).
ANTIALIAS_FRACTION = 2.0 / 3.0

_H = 6.62607015e-34  # Planck constant, J s
_M0 = 9.1093837015e-31  # electron rest mass, kg
_E = 1.602176634e-19  # elementary charge, C
_C = 299792458.0  # speed of light, m/s


def wavelength_a(energy_ev: float) -> float:
    """Relativistic electron wavelength in Å for a kinetic energy in eV."""
    momentum = math.sqrt(2 * _M0 * _E * energy_ev * (1 + _E * energy_ev / (2 * _M0 * _C**2)))
    return _H / momentum * 1e10


def energy_ev_for_wavelength_a(wavelength_a_: float) -> float:
    """The kinetic energy in eV of an electron of relativistic wavelength `wavelength_a_` Å
    (the inverse of `wavelength_a`; detectors such as Dectris's record the wavelength)."""
    rest = _M0 * _C**2
    momentum_energy = _H * _C / (wavelength_a_ * 1e-10)  # p·c, J
    return (math.sqrt(rest**2 + momentum_energy**2) - rest) / _E


def native_window_px(out_px: int, ratio: float) -> int:
    """The odd number of native diffraction pixels, centred on zero frequency, that covers
    `out_px` pattern pixels of `ratio` native pixels each: the window the multislice delivers
    before `simulate.detector_pixels` integrates it onto `detector.pixel_mrad` (here because
    the config checks it against the antialiased band)."""
    needed = math.ceil(out_px * ratio - 1e-9)
    return needed if needed % 2 == 1 else needed + 1
