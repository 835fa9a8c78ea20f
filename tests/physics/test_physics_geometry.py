"""Output shape and orientation: (ceil(Lx/s), ceil(Ly/s)), axis 0 along x, scan from the origin."""

import ase
import numpy as np
import pytest

from stemjax import simulate_adf
from stemjax.physics import Microscope, plan_geometry

KWARGS = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0))


@pytest.mark.parametrize(("extent", "sampling", "shape"), [
    ((6.0, 9.0), 0.2, (30, 45)),
    ((6.1, 9.05), 0.2, (31, 46)),
    ((6.9, 4.6), 0.3, (23, 16)),  # 6.9 / 0.3 = 23.000000000000004 in floating point
    ((3.297, 5.710571512554588), 0.2, (17, 29)),
])
def test_output_shape(extent, sampling, shape):
    for interpolate in (True, False):
        geometry = plan_geometry(extent, [1.0], [74], Microscope(), scan_sampling=sampling,
                                 interpolate=interpolate)
        assert geometry.output_gpts == shape


def single_atom(extent, x, y, z=74):
    return ase.Atoms(numbers=[z], positions=[[x, y, 1.0]], cell=[extent[0], extent[1], 2.0],
                     pbc=True)


@pytest.mark.parametrize("method", ["prism", "multislice"])
def test_brightest_pixel_is_at_the_atom(method):
    extent, shape = (6.1, 9.05), (31, 46)  # rectangular, not a multiple of the scan step
    x, y = 2.05, 6.1
    image = simulate_adf(single_atom(extent, x, y), scan_sampling=0.2, method=method, **KWARGS)
    assert image.shape == shape
    sx, sy = extent[0] / shape[0], extent[1] / shape[1]
    assert np.unravel_index(np.argmax(image), image.shape) == (round(x / sx), round(y / sy))


# On a 6 × 9 Å cell the scan step (0.2 Å) is a multiple of the potential pixels (0.05 Å, and
# 0.025 Å for the transmission function), so an atom on a scan position also sits on the
# potential grid: the image is then symmetric about it to rounding (see test_physics_translation
# for off-grid atoms).
EXTENT, SHAPE = (6.0, 9.0), (30, 45)


@pytest.mark.parametrize("method", ["prism", "multislice"])
def test_scan_starts_at_the_origin(method):
    """Scan positions are i × L / n (no half-pixel offset): the peak is symmetric about the atom."""
    i0, j0 = 10, 31
    image = simulate_adf(single_atom(EXTENT, i0 * 0.2, j0 * 0.2), scan_sampling=0.2,
                         method=method, **KWARGS)
    assert image.shape == SHAPE
    assert np.unravel_index(np.argmax(image), image.shape) == (i0, j0)
    for d in (1, 2, 3):
        assert image[i0 + d, j0] == pytest.approx(image[i0 - d, j0], rel=5e-4)
        assert image[i0, j0 + d] == pytest.approx(image[i0, j0 - d], rel=5e-4)
    assert image[i0 + 1, j0] < 0.9 * image[i0, j0]


def test_atom_between_scan_positions():
    image = simulate_adf(single_atom(EXTENT, 7.5 * 0.2, 20 * 0.2), scan_sampling=0.2, **KWARGS)
    assert image[7, 20] == pytest.approx(image[8, 20], rel=5e-4)  # half-way between 7 and 8
    assert max(image[7, 20], image[8, 20]) == image.max()
    assert image[6, 20] < 0.9 * image[7, 20]


def test_values_are_a_fraction_of_the_beam():
    extent = (6.1, 9.05)
    image = simulate_adf(single_atom(extent, 3.0, 4.0), scan_sampling=0.2, **KWARGS)
    assert image.dtype == np.float32
    assert 0.0 <= image.min() and image.max() < 0.1
    vacuum = simulate_adf(single_atom(extent, 3.0, 4.0, z=1), scan_sampling=0.2, **KWARGS)
    assert image.max() > 20 * vacuum.max()  # W scatters far more than H
