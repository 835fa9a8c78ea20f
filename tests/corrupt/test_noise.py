"""Intensity effects: dose, Poisson counting, detector, probe current, contamination, and the
shared normalisation."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stemjax.corrupt import clean_config, corrupt, noise, normalise_image
from stemjax.corrupt.config import ContaminationConfig, NoiseConfig

H = W = 64
M = 8


def test_electrons_per_pixel_30pA_20us():
    expected = 30e-12 * 20e-6 / 1.602176634e-19  # ≈ 3745 e⁻/px
    assert noise.electrons_per_pixel(30.0, 20.0) == pytest.approx(expected, rel=1e-9)
    sampled = noise.sample_electrons_per_pixel(
        jax.random.key(0), NoiseConfig(probe_current_min_pA=30.0, probe_current_max_pA=30.0)
    )
    assert float(sampled) == pytest.approx(expected, rel=1e-5)


def _mean_var_tolerance(lam, n, k=5.0):
    """k standard errors of (sample mean − sample variance) for Poisson(lam) with n draws."""
    return k * np.sqrt(lam / n + (lam + 2 * lam**2) / n)


def test_poisson_counts_mean_equals_variance():
    lam, n = 37.45, 4 * H * W  # 0.01 of the beam at 3745 e⁻/px
    keys = jax.random.split(jax.random.key(1), 4)
    x = np.asarray(jax.vmap(lambda k: noise.poisson_counts(k, jnp.full((H, W), lam)))(keys))
    assert np.all(x == np.round(x)) and x.min() >= 0
    mean, var = x.mean(), x.var(ddof=1)
    assert abs(mean - lam) < 5 * np.sqrt(lam / n)
    assert abs(mean - var) < _mean_var_tolerance(lam, n)


def test_pipeline_poisson_at_configured_dose():
    """Only counting on: detector output = electrons ~ Poisson(clean × 30 pA × 20 µs / e)."""
    base = clean_config()
    cfg = dataclasses.replace(
        base,
        noise=dataclasses.replace(
            base.noise, poisson=True, probe_current_min_pA=30.0, probe_current_max_pA=30.0
        ),
        normalise=False,
    )
    level, size = 0.01, 128
    clean = jnp.full((size + 2 * M, size + 2 * M), level, jnp.float32)
    f = functools.partial(corrupt, cfg=cfg, pixel_size=0.2074, out_shape=(size, size))
    raw = np.asarray(jax.jit(f)(jax.random.key(2), clean, jnp.zeros((1, 2)))[2]["raw"])
    lam, n = level * noise.electrons_per_pixel(30.0, 20.0), raw.size
    assert abs(raw.mean() - lam) < 5 * np.sqrt(lam / n)
    assert abs(raw.mean() - raw.var(ddof=1)) < _mean_var_tolerance(lam, n)


def test_total_counts_scale_with_dose():
    expected = jnp.asarray(np.random.default_rng(0).uniform(0.002, 0.05, (H, W)), jnp.float32)
    totals = [
        float(noise.poisson_counts(jax.random.key(i), expected * dose).sum())
        for i, dose in enumerate([1000.0, 2000.0, 8000.0])
    ]
    mu = float(expected.sum())
    for total, dose in zip(totals, [1000.0, 2000.0, 8000.0], strict=True):
        assert abs(total - mu * dose) < 5 * np.sqrt(mu * dose)


def test_detector_gain_offset_and_read_noise():
    lam, gain, offset, rms = 40.0, 1.7, 25.0, 3.0
    counts = noise.poisson_counts(jax.random.key(3), jnp.full((128, 128), lam))
    out = np.asarray(noise.detector_response(jax.random.key(4), counts, gain, offset, rms))
    n = out.size
    assert abs(out.mean() - (gain * lam + offset)) < 5 * gain * np.sqrt((lam + rms**2) / n)
    var_expected = gain**2 * (lam + rms**2)
    assert abs(out.var() / var_expected - 1) < 5 * np.sqrt(2 / n) + 0.02
    # detector off: identity
    same = noise.detector_response(jax.random.key(4), counts, 1.0, 0.0, 0.0)
    np.testing.assert_array_equal(np.asarray(same), np.asarray(counts))


def test_probe_current_variation_per_image_and_line():
    cfg = NoiseConfig(current_image_rel_rms=0.05, current_line_rel_rms=0.02)
    keys = jax.random.split(jax.random.key(5), 256)
    f = jax.vmap(lambda k: noise.probe_current_factors(k, cfg, 512))(keys)
    f = np.asarray(f)
    image = f.mean(axis=1)  # per-image factor (line noise averages out)
    assert abs(image.std() - 0.05) < 0.05 * 0.25
    line = f / image[:, None]
    assert abs(line.std() - 0.02) < 0.02 * 0.1
    off = noise.probe_current_factors(keys[0], NoiseConfig(0.0, 0.0, 0.0, 0.0, 0.0, 0.0), 16)
    np.testing.assert_array_equal(np.asarray(off), np.ones(16))


@pytest.mark.parametrize("ell", [3.0, 6.0])
def test_smooth_field_statistics(ell):
    """Unit variance, zero mean, autocorrelation exp(−r²/4ℓ²) (checked at r = 2ℓ: e⁻¹)."""
    n = 256
    g = np.asarray(noise.smooth_field(jax.random.normal(jax.random.key(6), (n, n)), ell))
    assert abs(g.mean()) < 1e-5 and abs(g.std() - 1) < 1e-4
    acf = np.real(np.fft.ifft2(np.abs(np.fft.fft2(g)) ** 2))  # periodic autocorrelation
    acf = acf / acf[0, 0]
    lag = int(2 * ell)
    rho = 0.5 * (acf[lag, 0] + acf[0, lag])
    assert abs(rho - np.exp(-(lag**2) / (4 * ell**2))) < 0.12


def test_contamination_nonnegative_linear_and_off():
    def field(a):
        cfg = ContaminationConfig(amp_min_rel=a, amp_max_rel=a)
        return np.asarray(noise.sample_contamination(jax.random.key(7), cfg, (H, W), 0.5, 0.02))

    assert np.array_equal(field(0.0), np.zeros((H, W)))
    c1, c2 = field(0.1), field(0.2)
    assert c1.min() >= 0 and c1.max() > 0
    np.testing.assert_allclose(c2, 2 * c1, rtol=1e-5, atol=1e-9)
    assert 0.3 * 0.1 * 0.02 < c1.mean() < 3 * 0.1 * 0.02


# --- normalisation ------------------------------------------------------------------------------


def _robust_stats(x):
    q25, q50, q75 = np.quantile(np.asarray(x), [0.25, 0.5, 0.75])
    return q50, (q75 - q25) / 1.3489795


def test_normalise_zero_median_unit_spread_and_affine_invariance():
    rng = np.random.default_rng(8)
    img = (rng.gamma(2.0, 3.0, (H, W)) + 50.0).astype(np.float32)
    out = normalise_image(jnp.asarray(img))
    med, spread = _robust_stats(out)
    assert abs(med) < 1e-5 and abs(spread - 1) < 1e-5
    out2 = normalise_image(jnp.asarray(3.7 * img - 120.0))
    np.testing.assert_allclose(np.asarray(out2), np.asarray(out), atol=1e-4)
    # NumPy in → NumPy out, same numbers (predict runs it on the host)
    out_np = normalise_image(img)
    assert isinstance(out_np, np.ndarray) and out_np.dtype == np.float32
    np.testing.assert_allclose(out_np, np.asarray(out), atol=1e-5)
    # batched, jitted, and a constant image maps to zeros
    batch = jax.jit(normalise_image)(jnp.stack([jnp.asarray(img), jnp.full((H, W), 4.0)]))
    np.testing.assert_allclose(np.asarray(batch[0]), np.asarray(out), atol=1e-5)
    assert np.array_equal(np.asarray(batch[1]), np.zeros((H, W)))
