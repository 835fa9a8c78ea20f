"""Projected single-atom potential on a grid against the parametrization's analytic form."""

import jax.numpy as jnp
import numpy as np
import pytest

from stemjax.physics import (
    load_parametrization,
    projected_potential_radial,
    projected_scattering_factor,
)
from stemjax.physics.potential import slice_potentials

pytestmark = pytest.mark.usefixtures("enable_x64")

L, N = 20.0, 800  # cell (Å) and grid: 0.025 Å pixels
CENTRE = (10.0, 10.0)


def gridded_potential(name, z=74, centre=CENTRE):
    params = load_parametrization(name)
    k = np.fft.fftfreq(N, L / N)
    form = projected_scattering_factor(jnp.asarray(k[:, None] ** 2 + k[None, :] ** 2),
                                       params.table([z]), params.name)
    v = slice_potentials(jnp.asarray([centre]), jnp.ones((1, 1)), jnp.zeros(1, jnp.int32), 1, form,
                         (N, N), (L, L))
    return np.asarray(v[0])


def radii(centre=CENTRE):
    x = np.arange(N) * (L / N)
    return np.hypot(x[:, None] - centre[0], x[None, :] - centre[1])


@pytest.mark.parametrize("name", ["lobato", "kirkland"])
def test_single_atom_potential_matches_analytic_form(name):
    """W atom in a 20 Å cell vs V_z(r) (Bessel-K closed form) at 0.3–3 Å.

    The grid potential keeps the k = 0 term and the analytic V_z decays exponentially, so no
    offset appears: the periodic images contribute < 1e-6 V·Å. What remains is the ringing of
    the band limit (alternating sign between pixels, ∝ (pixel/r)²): 0.3 % of V at 0.3–1 Å,
    < 0.03 V·Å beyond 2 Å where V itself drops to 0.2 V·Å.
    """
    params = load_parametrization(name)
    v = gridded_potential(name)
    r = radii()
    ring = (r >= 0.3) & (r <= 3.0)
    analytic = projected_potential_radial(r[ring], params, 74)
    np.testing.assert_allclose(v[ring], analytic, rtol=1e-2, atol=0.02)
    core = (r >= 0.3) & (r <= 1.0)
    np.testing.assert_allclose(v[core], projected_potential_radial(r[core], params, 74), rtol=5e-3)
    # The volume integral is the k = 0 Fourier coefficient: mean over the cell × area = V̂(0).
    v0 = float(projected_scattering_factor(jnp.zeros(()), params.table([74]), params.name)[0])
    assert v.mean() * L * L == pytest.approx(v0, rel=1e-10)


def test_parametrizations_are_distinct_and_scale_with_z():
    """Both tables are read (they differ by a few %), and V grows with Z at fixed r."""
    r = np.array([0.5, 1.0, 2.0])
    lob, kirk = load_parametrization("lobato"), load_parametrization("kirkland")
    vl, vk = projected_potential_radial(r, lob, 74), projected_potential_radial(r, kirk, 74)
    assert np.all(np.abs(vl / vk - 1) < 0.35) and np.any(np.abs(vl / vk - 1) > 1e-3)
    se, te = projected_potential_radial(r, lob, 34), projected_potential_radial(r, lob, 52)
    assert np.all(se < te) and np.all(te < vl)


def test_potential_is_placed_at_the_atom_position():
    """The potential peaks at the atom and is mirror-symmetric about it along x and y."""
    centre = (293 * L / N, 444 * L / N)  # on a grid point away from the cell centre
    v = gridded_potential("lobato", z=34, centre=centre)
    i, j = np.unravel_index(np.argmax(v), v.shape)
    assert (i, j) == (293, 444)
    np.testing.assert_allclose(v[i + 1:i + 60, j], v[i - 1:i - 60:-1, j], rtol=1e-9)
    np.testing.assert_allclose(v[i, j + 1:j + 60], v[i, j - 1:j - 60:-1], rtol=1e-9)
