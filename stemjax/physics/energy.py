"""Relativistic electron wavelength and interaction constant from the beam energy.

Both accept Python/NumPy numbers (evaluated on the host, e.g. while planning grids) and JAX
arrays (traced, differentiable).
"""

import jax.numpy as jnp
import numpy as np

from stemjax.physics.constants import ELECTRON_REST_ENERGY_EV, HC_EV_ANGSTROM


def _xp(x):
    return np if isinstance(x, (int, float, np.ndarray, np.generic)) else jnp


def wavelength(energy):
    """Relativistic de Broglie wavelength λ (Å) of an electron of kinetic energy `energy` (eV).

    λ = hc / sqrt(E (2 m0c² + E)); 0.04176 Å at 80 keV.
    """
    xp = _xp(energy)
    return HC_EV_ANGSTROM / xp.sqrt(energy * (2.0 * ELECTRON_REST_ENERGY_EV + energy))


def interaction_constant(energy):
    """Interaction constant σ (rad / (V·Å)) at kinetic energy `energy` (eV).

    σ = 2π / (λ E) · (m0c² + E) / (2 m0c² + E)  (Kirkland 2010, eq. 5.6), so that a projected
    potential V_z (V·Å) gives the phase σ V_z (rad).
    """
    lam = wavelength(energy)
    mc2 = ELECTRON_REST_ENERGY_EV
    return 2.0 * np.pi / (lam * energy) * (mc2 + energy) / (2.0 * mc2 + energy)
