"""Translation covariance: moving the atoms moves the image, and nothing else.

The ADF image of a periodic cell whose atoms are all shifted by exactly k scan steps is the
image rolled by k pixels, and the integrated signal of one atom does not depend on where it
sits relative to the potential grid. A discretisation that makes the signal depend on the
atoms' sub-pixel registry breaks the < 1 % agreement with abTEM for generic atom positions
(thermal jitter, strain, random supercell origins in training).

Measured (80 kV, 60–200 mrad, 0.05 Å potential pixels): with `oversampling=2` (the default) the
integrated signal of a W atom drops by 2 % per axis (3.5 % diagonally) when it moves by half
a transmission-function pixel (0.0125 Å), and a WSe2 image shifted by 2 scan steps differs
from the rolled image by 1.7 % RMS; with `oversampling=4`: 0.27 % and 0.5 %; 8: 0.1 %.
"""

import ase
import numpy as np
import pytest
from physics_helpers import extent_of, rel_rms, wse2_orthogonal

from stemjax import simulate_adf

KWARGS = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0), scan_sampling=0.2,
              potential_sampling=0.05)


def single_w(x, y):
    return ase.Atoms("W", positions=[[x, y, 1.0]], cell=[6.0, 9.0, 2.0], pbc=True)


@pytest.mark.parametrize("oversampling", [2, 4])
def test_single_atom_signal_independent_of_subpixel_position(oversampling):
    """Σ image = n × (mean of the band-limited image): invariant under any shift of the atom."""
    on_grid = simulate_adf(single_w(2.0, 6.2), oversampling=oversampling, **KWARGS)
    off_grid = simulate_adf(single_w(2.0125, 6.2125), oversampling=oversampling, **KWARGS)
    assert off_grid.sum() == pytest.approx(on_grid.sum(), rel=5e-3)


@pytest.mark.parametrize("oversampling", [2, 4])
def test_shifting_the_atoms_rolls_the_image(oversampling):
    atoms = wse2_orthogonal()
    base = simulate_adf(atoms, oversampling=oversampling, **KWARGS)
    step = np.array(extent_of(atoms)) / base.shape
    errors = []
    for k in (1, 2, 3):
        shifted = atoms.copy()
        shifted.positions[:, :2] += k * step
        shifted.wrap()
        image = simulate_adf(shifted, oversampling=oversampling, **KWARGS)
        errors.append(rel_rms(np.roll(image, (-k, -k), axis=(0, 1)), base))
    assert max(errors) < 1e-2, errors
