"""Fresnel propagator: unitarity, composition, and vacuum before the specimen acting as defocus."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import extent_of, rel_rms, wse2_orthogonal

from stemjax.physics import Aberrations, Microscope, adf_image, plan_geometry, wavelength
from stemjax.physics.adf import _propagators, antialias_aperture, transmission_functions

pytestmark = pytest.mark.usefixtures("enable_x64")

adf_jit = jax.jit(adf_image, static_argnames="geometry")

GPTS, SAMPLING = (48, 40), (0.1, 0.1)
LAM = wavelength(80e3)


def _k2(gpts=GPTS, sampling=SAMPLING):
    kx = np.fft.fftfreq(gpts[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(gpts[1], sampling[1])[None, :]
    return kx**2 + ky**2


def fresnel(dz):
    """The propagator of stemjax/physics/adf.py, exp(−iπλΔz k²), without the antialias aperture."""
    return np.exp(-1j * np.pi * LAM * dz * _k2())


def _random_wave(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=GPTS) + 1j * rng.normal(size=GPTS)


@pytest.mark.parametrize("dz", [0.5, 1.0, 37.0])
def test_fresnel_propagator_is_unitary(dz):
    psi = _random_wave()
    out = np.fft.ifft2(np.fft.fft2(psi) * fresnel(dz))
    assert np.sum(np.abs(out) ** 2) == pytest.approx(np.sum(np.abs(psi) ** 2), rel=1e-12)
    assert not np.allclose(out, psi, atol=1e-3)  # it does propagate


def test_fresnel_two_half_steps_equal_one_step():
    psi = np.fft.fft2(_random_wave(1))
    np.testing.assert_allclose(psi * fresnel(0.85) * fresnel(0.85), psi * fresnel(1.7), rtol=1e-12)


def _geometry(propagation):
    microscope = Microscope(detector_inner=20.0, detector_outer=100.0)
    geometry = plan_geometry((4.8, 4.0), [0.5], [74], microscope,
                             potential_sampling=max(SAMPLING), scan_sampling=1.0,
                             method="multislice", interpolate=False)
    assert geometry.gpts == GPTS and np.allclose(geometry.sampling, SAMPLING)
    return microscope, dataclasses.replace(geometry, propagation=tuple(propagation))


def test_code_propagators_compose_and_are_unitary_inside_the_band_limit():
    """The propagators adf_image uses: Fresnel × antialias aperture; composition and unitarity."""
    microscope, geometry = _geometry((0.85, 0.85, 1.7, 0.0))
    p = np.asarray(_propagators(microscope, geometry, GPTS, jnp.complex128))
    aperture = np.asarray(antialias_aperture(GPTS, SAMPLING, jnp.float64))
    inside = aperture == 1.0
    assert inside.sum() > 0.3 * inside.size
    np.testing.assert_allclose(p[0] * p[1], p[2] * aperture, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(p[2][inside], fresnel(1.7)[inside], rtol=1e-12)
    np.testing.assert_allclose(np.abs(p[3]), aperture, atol=1e-14)
    # A wave inside the band limit keeps its norm through any of them.
    psi_k = np.fft.fft2(_random_wave(2)) * inside
    for q in p:
        norm = np.sum(np.abs(psi_k) ** 2)
        assert np.sum(np.abs(psi_k * q) ** 2) == pytest.approx(norm, rel=1e-12)


def test_transmission_functions_are_band_limited_and_unity_in_vacuum():
    microscope, geometry = _geometry((0.0,))
    positions = jnp.asarray([[1.3, 2.1, 0.5]])
    t = transmission_functions(positions, jnp.asarray([74]), jnp.asarray([True]), 80e3, geometry)
    spectrum = np.abs(np.fft.fft2(np.asarray(t[0])))
    cutoff = 2.0 / 3.0 / (2.0 * max(SAMPLING))
    assert spectrum[np.sqrt(_k2()) > cutoff].max() < 1e-10 * spectrum.max()
    assert np.abs(np.asarray(t[0]) - 1).max() > 0.1  # the atom is there
    empty = transmission_functions(positions, jnp.asarray([74]), jnp.asarray([False]), 80e3,
                                   geometry)
    np.testing.assert_allclose(np.asarray(empty), 1.0, atol=1e-12)


@pytest.mark.parametrize("method", ["multislice", "prism"])
def test_vacuum_above_the_specimen_equals_a_defocus_change(method):
    """Lifting the specimen by Δz (an extra Δz of vacuum before it) equals C10 → C10 + Δz.

    With ψ̂ ∝ exp(−iχ), χ = π/λ C10 α² = πλ C10 k², an extra propagation exp(−iπλΔz k²) adds Δz
    to C10 (abTEM's convention C10 = −defocus: a positive defocus focuses into the specimen).
    """
    atoms = wse2_orthogonal()
    dz, c10, c30 = 20.0, 10.0, 1e4  # Cs breaks the ±C10 symmetry of the probe's intensity
    positions = np.asarray(atoms.positions)
    numbers, mask = np.asarray(atoms.numbers), np.ones(len(atoms), bool)

    def image(z_shift, cell_thickness, c10):
        microscope = Microscope(detector_inner=40.0, detector_outer=120.0,
                                aberrations=Aberrations(C10=c10, C30=c30))
        lifted = positions + [0.0, 0.0, z_shift]
        geometry = plan_geometry(extent_of(atoms), lifted[:, 2], numbers, microscope,
                                 potential_sampling=0.1, slice_thickness=1.0, scan_sampling=0.5,
                                 cell_thickness=cell_thickness, window_extent=100.0,
                                 method=method)
        assert geometry.slice_thickness == 1.0  # same slicing for both cells
        image = adf_jit(jnp.asarray(lifted), numbers, mask, microscope, geometry=geometry)
        return np.asarray(image)

    lifted = image(dz, 8.0 + dz, c10)
    defocused = image(0.0, 8.0, c10 + dz)
    assert rel_rms(lifted, defocused) < 1e-9
    # ... and not the opposite sign, nor no change at all.
    assert rel_rms(lifted, image(0.0, 8.0, c10 - dz)) > 1e-2
    assert rel_rms(lifted, image(0.0, 8.0, c10)) > 1e-2
