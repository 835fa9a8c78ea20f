"""Physics layer: pure JAX functions of arrays and parameter dataclasses (no Flax, no Hydra).

Units everywhere: lengths Å, angles mrad (aberration angles φ in rad), energies eV,
projected potential V·Å, spatial frequencies 1/Å (no 2π).
"""

from stemjax.physics.adf import ADFGeometry, Microscope, adf_image, plan_geometry
from stemjax.physics.energy import interaction_constant, wavelength
from stemjax.physics.potential import (
    Parametrization,
    load_parametrization,
    projected_potential_radial,
    projected_scattering_factor,
)
from stemjax.physics.probe import (
    ABERRATION_SYMBOLS,
    Aberrations,
    aberration_phase,
    aberration_phase_rms,
    probe_fourier,
)

__all__ = [
    "ABERRATION_SYMBOLS",
    "ADFGeometry",
    "Aberrations",
    "Microscope",
    "Parametrization",
    "aberration_phase",
    "aberration_phase_rms",
    "adf_image",
    "interaction_constant",
    "load_parametrization",
    "plan_geometry",
    "probe_fourier",
    "projected_potential_radial",
    "projected_scattering_factor",
    "wavelength",
]
