"""Intensity corruption: dose, probe-current variation, Poisson counting, detector, contamination.

Signals are in fraction of the incident beam (what the simulator returns) until they are
multiplied by the electrons per pixel; from there on they are electrons (e⁻/px), and after the
detector, detector units.
"""

import math

import jax
import jax.numpy as jnp

from stemjax.corrupt._rand import in_range, uniform_normal
from stemjax.corrupt.config import ContaminationConfig, NoiseConfig

#: Elementary charge (C).
ELEMENTARY_CHARGE_C = 1.602176634e-19


def electrons_per_pixel(current_pA, dwell_us):
    """Incident electrons per pixel = probe current × dwell / e (30 pA × 20 µs ≈ 3745 e⁻/px)."""
    return current_pA * dwell_us * (1e-18 / ELEMENTARY_CHARGE_C)


def sample_electrons_per_pixel(key: jax.Array, cfg: NoiseConfig) -> jax.Array:
    """Dose (e⁻/px) with current log-uniform in [min, max] pA and dwell uniform in [min, max] µs."""
    u, _ = uniform_normal(key, 2)
    log_i = in_range(u[0], math.log(cfg.probe_current_min_pA), math.log(cfg.probe_current_max_pA))
    dwell = in_range(u[1], cfg.dwell_min_us, cfg.dwell_max_us)
    return electrons_per_pixel(jnp.exp(log_i), dwell)


def probe_current_factors(key: jax.Array, cfg: NoiseConfig, n_lines: int) -> jax.Array:
    """(n_lines,) multiplicative probe-current factor of each scan line (per image × per line).

    (1 + σ_image·N) · (1 + σ_line·N_i), clipped at 0; exactly 1 when both rms are 0.
    """
    _, z = uniform_normal(key, 0, (n_lines + 1,))
    img = 1.0 + cfg.current_image_rel_rms * z[0]
    line = 1.0 + cfg.current_line_rel_rms * z[1:]
    return jnp.maximum(img * line, 0.0)


def poisson_counts(key: jax.Array, expected: jax.Array) -> jax.Array:
    """Detected electrons ~ Poisson(`expected` e⁻), as float32 (expected is clipped at 0)."""
    lam = jnp.maximum(expected, 0.0)
    return jax.random.poisson(key, lam, lam.shape).astype(jnp.float32)


def sample_detector(key: jax.Array, cfg: NoiseConfig) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Draw (gain detector-units/e⁻, offset detector units, read-noise rms e⁻), each ()."""
    u, _ = uniform_normal(key, 3)
    return (
        in_range(u[0], cfg.gain_min, cfg.gain_max),
        in_range(u[1], cfg.offset_min, cfg.offset_max),
        in_range(u[2], cfg.detector_noise_rms_min_e, cfg.detector_noise_rms_max_e),
    )


def detector_response(key: jax.Array, electrons: jax.Array, gain, offset, noise_rms_e):
    """Detector signal = gain·(electrons + N(0, noise_rms_e²)) + offset (detector units)."""
    if isinstance(noise_rms_e, int | float) and noise_rms_e == 0:  # static: no draw needed
        return gain * electrons + offset
    _, z = uniform_normal(key, 0, electrons.shape)
    return gain * (electrons + noise_rms_e * z) + offset


def smooth_field(white: jax.Array, corr_length_px) -> jax.Array:
    """Zero-mean, unit-variance smooth random field from `white` N(0, 1) noise (periodic).

    White noise convolved with a Gaussian kernel of 1σ = ℓ = `corr_length_px` (filter
    exp(−2π²ℓ²|k|²) in Fourier space): autocorrelation exp(−r²/4ℓ²).
    """
    h, w = white.shape
    kr = jnp.fft.fftfreq(h)[:, None]
    kc = jnp.fft.rfftfreq(w)[None, :]
    filt = jnp.exp(-2.0 * jnp.pi**2 * corr_length_px**2 * (kr**2 + kc**2))
    g = jnp.fft.irfft2(jnp.fft.rfft2(white) * filt, s=(h, w))
    g = g - g.mean()
    return g / jnp.maximum(jnp.sqrt(jnp.mean(g * g)), 1e-12)


def sample_contamination(
    key: jax.Array, cfg: ContaminationConfig, shape: tuple[int, int], pixel_size_A, mean_signal
) -> jax.Array:
    """Non-negative contamination signal (fraction of the beam) on the clean grid `shape`.

    a·`mean_signal`·max(0, 1 + g), g = `smooth_field` with correlation length ℓ Å; a and ℓ from
    `cfg`. Exactly zero when a = 0.
    """
    u, white = uniform_normal(key, 2, shape)
    amp = in_range(u[0], cfg.amp_min_rel, cfg.amp_max_rel)
    ell_px = in_range(u[1], cfg.corr_length_min_A, cfg.corr_length_max_A) / pixel_size_A
    g = smooth_field(white, ell_px)
    return amp * mean_signal * jnp.maximum(1.0 + g, 0.0)
