"""jax.grad of the ADF image against central finite differences (float64), PRISM and multislice."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import extent_of, wse2_orthogonal

from stemjax.physics import Aberrations, Microscope, adf_image, plan_geometry

pytestmark = [pytest.mark.usefixtures("enable_x64"), pytest.mark.slow]

ATOM = 0  # the W atom at the origin


def _microscope(c10=20.0, c12=15.0, source_size=0.3):
    return Microscope(energy=80e3, semiangle_cutoff=25.0, detector_inner=40.0,
                      detector_outer=120.0, source_size=source_size,
                      aberrations=Aberrations(C10=c10, C12=c12, phi12=0.3, C30=1e4))


class Problem:
    """A jitted scalar loss Σ image × w on a tiny WSe2 cell, and its gradient."""

    def __init__(self, method):
        atoms = wse2_orthogonal()
        self.positions = jnp.asarray(atoms.positions, jnp.float64)
        self.numbers = jnp.asarray(atoms.numbers)
        self.mask = jnp.ones(len(atoms), bool)
        self.microscope = _microscope()
        self.geometry = plan_geometry(extent_of(atoms), atoms.positions[:, 2], atoms.numbers,
                                      self.microscope, potential_sampling=0.1, scan_sampling=0.5,
                                      method=method)
        assert self.geometry.method == method
        weights = np.random.default_rng(0).uniform(size=self.geometry.output_gpts)
        geometry = self.geometry

        @jax.jit
        def loss(positions, microscope):
            image = adf_image(positions, self.numbers, self.mask, microscope, geometry)
            return jnp.sum(image * weights)

        self.loss = loss
        self.grad = jax.jit(jax.grad(loss, argnums=(0, 1)))

    def value(self, positions=None, **changes):
        positions = self.positions if positions is None else positions
        ab = {k: v for k, v in changes.items() if k.startswith("C")}
        microscope = dataclasses.replace(
            self.microscope,
            aberrations=dataclasses.replace(self.microscope.aberrations, **ab),
            **{k: v for k, v in changes.items() if not k.startswith("C")},
        )
        return float(self.loss(positions, microscope))


@pytest.fixture(scope="module", params=["prism", "multislice"])
def problem(request):
    p = Problem(request.param)
    p.gradients = p.grad(p.positions, p.microscope)
    return p


def test_loss_is_float64_and_nontrivial(problem):
    value = problem.loss(problem.positions, problem.microscope)
    assert value.dtype == jnp.float64 and float(value) > 0


def test_all_gradients_finite(problem):
    d_positions, d_microscope = problem.gradients
    assert d_positions.shape == problem.positions.shape
    for leaf in jax.tree_util.tree_leaves((d_positions, d_microscope)):
        assert np.all(np.isfinite(np.asarray(leaf)))


@pytest.mark.parametrize(("name", "step"), [("C10", 1e-2), ("C12", 1e-2), ("source_size", 1e-3)])
def test_microscope_gradient_matches_finite_difference(problem, name, step):
    _, d_microscope = problem.gradients
    if name == "source_size":
        analytic = float(d_microscope.source_size)
        x0 = float(problem.microscope.source_size)
    else:
        analytic = float(getattr(d_microscope.aberrations, name))
        x0 = float(getattr(problem.microscope.aberrations, name))
    numeric = (problem.value(**{name: x0 + step}) - problem.value(**{name: x0 - step})) / (2 * step)
    assert abs(numeric) > 1e-6 * abs(problem.value())  # the parameter matters
    assert analytic == pytest.approx(numeric, rel=1e-4)  # measured: ≤ 2e-6


@pytest.mark.parametrize("axis", [0, 1])
def test_position_gradient_matches_finite_difference(problem, axis):
    d_positions, _ = problem.gradients
    step = 1e-3
    shift = jnp.zeros_like(problem.positions).at[ATOM, axis].set(step)
    numeric = (problem.value(problem.positions + shift)
               - problem.value(problem.positions - shift)) / (2 * step)
    assert float(d_positions[ATOM, axis]) == pytest.approx(numeric, rel=5e-4)  # measured: 7e-5
    assert abs(numeric) > 1e-4
