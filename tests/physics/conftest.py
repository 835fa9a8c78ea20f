"""Fixtures of the physics tests: a float64 switch and a small WSe2 cell."""

import jax
import pytest
from physics_helpers import wse2_orthogonal


@pytest.fixture(scope="module")
def enable_x64():
    """Run a module in float64 (module scope); restores the previous setting afterwards."""
    previous = bool(jax.config.read("jax_enable_x64"))
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


@pytest.fixture(scope="session")
def wse2_1x1():
    return wse2_orthogonal((1, 1))
