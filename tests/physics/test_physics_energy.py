"""Closed forms: relativistic wavelength and interaction constant."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.constants as C

from stemjax.physics import interaction_constant, wavelength


@pytest.mark.parametrize(("energy", "expected"), [(80e3, 0.04176), (200e3, 0.02508)])
def test_wavelength_textbook_values(energy, expected):
    assert wavelength(energy) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("energy", [60e3, 80e3, 200e3, 300e3])
def test_wavelength_against_scipy_constants(energy):
    # λ = h / sqrt(2 m0 e U (1 + e U / (2 m0 c²))), from CODATA constants independent of the code.
    e_u = C.e * energy
    lam = C.h / np.sqrt(2 * C.m_e * e_u * (1 + e_u / (2 * C.m_e * C.c**2))) * 1e10
    assert wavelength(energy) == pytest.approx(lam, rel=1e-7)


def test_interaction_constant_kirkland_200kV():
    # Kirkland (2010) gives σ = 7.288e-4 rad/(V·Å) at 200 kV.
    assert interaction_constant(200e3) == pytest.approx(7.29e-4, rel=5e-3)


@pytest.mark.parametrize("energy", [80e3, 200e3])
def test_interaction_constant_against_scipy_constants(energy):
    # σ = 2π m e λ / h² with the relativistic mass m = m0 + e U / c² (Kirkland eq. 5.6).
    lam = wavelength(energy) * 1e-10
    m = C.m_e + C.e * energy / C.c**2
    sigma = 2 * np.pi * m * C.e * lam / C.h**2 * 1e-10  # rad / (V m) -> rad / (V Å)
    assert interaction_constant(energy) == pytest.approx(sigma, rel=1e-6)


def test_traced_and_differentiable():
    # Same values through JAX (traced); dλ/dE = −λ (m0c² + E) / (E (2m0c² + E)).
    energy = 80e3
    lam = jax.jit(wavelength)(jnp.float32(energy))
    assert float(lam) == pytest.approx(wavelength(energy), rel=1e-6)
    mc2 = C.m_e * C.c**2 / C.e
    expected = -wavelength(energy) * (mc2 + energy) / (energy * (2 * mc2 + energy))
    assert float(jax.grad(wavelength)(jnp.float32(energy))) == pytest.approx(expected, rel=1e-4)
