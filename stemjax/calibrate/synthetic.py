"""Synthetic micrographs with known calibration: the test bed of `stemjax.calibrate`.

The image is the calibration's own forward model (`model.expected_signal`) with defect columns
drawn on some sites, then Poisson counting and the detector's gain, offset and read noise, as in
`stemjax.corrupt`. The truth is returned, so a fit can be scored against it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from stemjax.calibrate.model import LatticeSetup, legendre_basis, render_signal


def synthetic_micrograph(
    setup: LatticeSetup,
    truth: dict[str, float],
    *,
    background: np.ndarray | None = None,
    defect_fraction: float = 0.1,
    seed: int = 0,
    site_offsets_px: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """A noisy micrograph (detector units, float32) of `setup`'s lattice under `truth`.

    truth: every `model.PARAMETERS` value (units in `model.UNITS`). background: Legendre
    coefficients (fraction of the beam), default none. defect_fraction: probability that a site
    carries one of the defect column types of `setup.responses` (types 1..K, drawn uniformly on
    the sublattice they belong to; 0 with pristine responses only). site_offsets_px: optional
    (M, 2) displacement of each site (px). Returns (image, info) with info holding the site
    classes, their pixel positions and the clean mean signal.
    """
    rng = np.random.default_rng(seed)
    values = {k: jnp.asarray(v, jnp.float32) for k, v in truth.items()}
    n_k = setup.responses.type_of.shape[1]
    site_class = np.zeros(len(setup.site_xy), np.int32)
    if n_k > 1 and defect_fraction > 0:
        type_of = np.asarray(setup.responses.type_of)
        for s in (0, 1):
            # classes whose column differs from the pristine one on this sublattice
            allowed = [k for k in range(1, n_k) if type_of[s, k] != type_of[s, 0]]
            on = np.flatnonzero(setup.site_sublattice == s)
            if not allowed:
                continue
            hit = on[rng.random(len(on)) < defect_fraction]
            site_class[hit] = rng.choice(allowed, size=len(hit))
    offsets = None if site_offsets_px is None else jnp.asarray(site_offsets_px, jnp.float32)
    signal = np.asarray(
        render_signal(values, setup, site_class=jnp.asarray(site_class), site_offsets_px=offsets),
        np.float64,
    )
    basis = legendre_basis(setup.image_shape, setup.background_order)
    if background is not None and len(basis):
        signal = signal + np.tensordot(np.asarray(background, np.float64), basis, axes=1)
    electrons = rng.poisson(truth["dose_electrons_per_px"] * np.maximum(signal, 0.0))
    read = truth["read_noise_electrons"] * rng.normal(size=signal.shape)
    image = truth["gain"] * (electrons + read) + truth["offset"]
    from stemjax.calibrate.model import site_pixels

    uv = np.asarray(site_pixels({k: jnp.asarray(v) for k, v in truth.items()}, setup))
    if site_offsets_px is not None:
        uv = uv + site_offsets_px
    return image.astype(np.float32), {
        "site_class": site_class,
        "site_px": uv,
        "signal": signal,
    }
