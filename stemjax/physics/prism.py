"""PRISM at interpolation 1, reduced to the detector: an exact fast path for periodic cells.

Multislice is linear in the incident wave. A probe on the periodic cell is a sum of plane waves
on the cell's reciprocal grid inside the aperture (beams b), ψ̂ = Σ_b c_b δ_b with
c_b(r_p) = ψ̂_probe(k_b) exp(−2πi k_b·r_p). If Ŝ_b(k) is the exit spectrum of beam b (its
S-matrix row), the ADF signal of a probe at r_p is

    I(r_p) = Σ_k∈det |Σ_b c_b Ŝ_b(k)|² = c^T M c*,   M_bb' = Σ_k∈det D(k) Ŝ_b(k) Ŝ_b'(k)*,

so after B plane-wave multislices and one Gram matrix, every probe position costs a B×B
quadratic form instead of a multislice. The result equals whole-cell multislice to rounding.
Aberrations, defocus, focal spread and the scan enter only through c, so changing them reuses
M. Memory and time grow as B² × detector pixels, so this path is for cells up to a few nm;
`plan_geometry(method="auto")` picks it when its estimated cost is lower.
"""

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.physics.energy import wavelength


def _angles_mrad(gpts, sampling, energy):
    """Scattering angle (mrad) of every point of an FFT grid at beam energy `energy` (eV)."""
    kx = np.fft.fftfreq(gpts[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(gpts[1], sampling[1])[None, :]
    return np.sqrt(kx**2 + ky**2) * float(wavelength(energy)) * 1e3


def beam_indices(gpts, sampling, energy, max_angle_mrad):
    """FFT-grid indices (B, 2) of the plane waves with scattering angle ≤ max_angle_mrad."""
    ix, iy = np.nonzero(_angles_mrad(gpts, sampling, energy) <= max_angle_mrad)
    return np.stack([ix, iy], axis=1)


def detector_indices(gpts, sampling, energy, max_angle_mrad):
    """Flat FFT-grid indices of the pixels with scattering angle < max_angle_mrad."""
    return np.flatnonzero(_angles_mrad(gpts, sampling, energy) < max_angle_mrad)


def detector_gram(transmission, propagators, beams, pixels, detector_weight, chunk):
    """Gram matrix M (B, B) of the beams' exit spectra over the detector pixels.

    transmission: (L, nx, ny); propagators: (L, nx, ny) Fresnel propagators applied before each
    slice (the first is folded into the probe coefficients by the caller and not used here);
    beams: (B, 2) static indices; pixels: (K,) static flat indices; detector_weight: (K,) traced.
    """
    nx, ny = transmission.shape[1:]
    dtype = transmission.dtype
    x = jnp.arange(nx)[:, None]
    y = jnp.arange(ny)[None, :]

    def exit_spectrum(beam):
        # ifft2 of a unit spike at (bx, by): exp(2πi (bx x / nx + by y / ny)) / N.
        phase = 2.0 * jnp.pi * (beam[0] * x / nx + beam[1] * y / ny)
        psi = (jnp.exp(1j * phase) / (nx * ny)).astype(dtype)

        def step(psi, xs):
            t, propagator = xs
            return jnp.fft.ifft2(jnp.fft.fft2(psi * t) * propagator), None

        if transmission.shape[0] > 1:
            psi, _ = jax.lax.scan(step, psi, (transmission[:-1], propagators[1:]))
        spectrum = jnp.fft.fft2(psi * transmission[-1]).reshape(-1)
        return spectrum[pixels]

    n = beams.shape[0]
    chunk = min(chunk, n)
    n_pad = -n % chunk
    padded = np.concatenate([beams, np.zeros((n_pad, 2), beams.dtype)])
    rows = jax.lax.map(jax.vmap(exit_spectrum), jnp.asarray(padded).reshape(-1, chunk, 2))
    rows = rows.reshape(-1, pixels.shape[0])[:n]  # (B, K)
    weighted = rows * detector_weight.astype(rows.real.dtype)[None, :]
    return weighted @ jnp.conj(rows).T


def prism_signal(gram, probe_coefficients, beam_k, positions, chunk):
    """ADF signal c^T M c* at probe `positions` (P, 2) Å.

    probe_coefficients: (F, B) probe spectrum at the beams (one row per focal node, weights
    already folded in as sqrt(w)); beam_k: (B, 2) spatial frequencies (1/Å).
    """
    real = positions.dtype

    def one_chunk(r):
        ramp = jnp.exp(-2j * jnp.pi * (r @ beam_k.T)).astype(gram.dtype)  # (p, B)
        c = probe_coefficients[:, None, :] * ramp[None]  # (F, p, B)
        cm = c @ gram
        return jnp.sum(jnp.real(cm * jnp.conj(c)), axis=(0, 2))

    n = positions.shape[0]
    chunk = min(chunk, n)
    n_pad = -n % chunk
    padded = jnp.concatenate([positions, jnp.zeros((n_pad, 2), real)])
    out = jax.lax.map(one_chunk, padded.reshape(-1, chunk, 2)).reshape(-1)
    return out[:n]
