"""Fourier interpolation of band-limited images (Nyquist scan → output pixels)."""

import numpy as np
import pytest
from physics_helpers import rel_rms

from stemjax import simulate_adf
from stemjax.physics.adf import fourier_resample

pytestmark = pytest.mark.usefixtures("enable_x64")

L = (3.7, 5.3)


def band_limited(shape, nyquist_x=False):
    """A real periodic function with frequencies below the Nyquist limit of `shape` (exact)."""
    nx, ny = shape
    x = np.arange(nx)[:, None] * L[0] / nx
    y = np.arange(ny)[None, :] * L[1] / ny
    f = 1.0 + 0.0 * x * y
    rng = np.random.default_rng(0)
    for kx in range(-(9 // 2), 9 // 2 + 1):  # frequencies |kx| ≤ 4 and |ky| ≤ 5 (in 1/L)
        for ky in range(-5, 6):
            a, phase = rng.normal(), rng.uniform(0, 2 * np.pi)
            f = f + a * np.cos(2 * np.pi * (kx * x / L[0] + ky * y / L[1]) + phase)
    if nyquist_x:
        f = f + 0.7 * np.cos(np.pi * shape[0] * x / L[0])
    return f


@pytest.mark.parametrize(("n", "m"), [((9, 11), (9, 11)), ((9, 11), (20, 33)),
                                      ((10, 12), (25, 31)), ((11, 12), (12, 12))])
def test_fourier_resample_reproduces_band_limited_function(n, m):
    image = fourier_resample(band_limited(n), m)
    assert image.shape == m and image.dtype == np.float64
    np.testing.assert_allclose(np.asarray(image), band_limited(m), atol=1e-10)


def test_fourier_resample_even_nyquist_cosine():
    """An even grid's Nyquist cosine is split evenly between ±k_N: it stays a cosine."""
    image = fourier_resample(band_limited((10, 11), nyquist_x=True), (23, 17))
    np.testing.assert_allclose(np.asarray(image), band_limited((23, 17), nyquist_x=False)
                               + 0.7 * np.cos(np.pi * 10 * np.arange(23)[:, None] / 23),
                               atol=1e-10)


def test_fourier_resample_refuses_to_downsample():
    with pytest.raises(ValueError, match="output_gpts"):
        fourier_resample(np.zeros((8, 8)), (6, 8))


def test_simulate_interpolated_equals_direct_scan(wse2_1x1):
    kwargs = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0), scan_sampling=0.2,
                  method="multislice", dtype=np.float32, source_size=0.2,
                  aberrations={"C10": 15.0, "C12": 10.0})
    direct = simulate_adf(wse2_1x1, interpolate=False, **kwargs)
    interpolated = simulate_adf(wse2_1x1, interpolate=True, **kwargs)
    assert direct.shape == interpolated.shape == (17, 29)
    assert rel_rms(interpolated, direct) < 1e-3
