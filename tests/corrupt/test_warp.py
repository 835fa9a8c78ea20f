"""Scan-distortion warp: identity, exactness, inverse map, and labels staying on their features."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stemjax.corrupt import clean_config, warp
from stemjax.corrupt.config import WarpConfig

H = W = 64
M = 16  # margin, px
CLEAN = (H + 2 * M, W + 2 * M)

#: A strong distortion (pixel_size = 1 Å/px, so Å = px): ~1.3 px linear drift at the edges,
#: 1.5 px rms non-linear drift, 0.4 px rms line jitter, ±3 px flyback decaying over 6-10 px.
STRONG = WarpConfig(
    linear_drift_max_frac=0.04,
    nonlinear_drift_rms_max_A=1.5,
    nonlinear_drift_modes=4,
    jitter_rms_min_A=0.4,
    jitter_rms_max_A=0.4,
    flyback_amp_max_A=3.0,
    flyback_decay_min_px=6.0,
    flyback_decay_max_px=10.0,
)


def render_blobs(points_clean_px, shape, sigma, amps=None):
    """Sum of Gaussian blobs (peak `amps`) at (P, 2) clean-pixel positions: (shape) float32."""
    p = np.asarray(points_clean_px, np.float64)
    amps = np.ones(len(p)) if amps is None else np.asarray(amps)
    r = np.arange(shape[0])[:, None, None]
    c = np.arange(shape[1])[None, :, None]
    d2 = (r - p[:, 0]) ** 2 + (c - p[:, 1]) ** 2
    return (amps * np.exp(-d2 / (2 * sigma**2))).sum(-1).astype(np.float32)


def local_extrema(img, kind="max"):
    """(N, 2) sub-pixel positions of strict 3×3 discrete local extrema (parabolic refinement)."""
    a = np.asarray(img, np.float64) * (1 if kind == "max" else -1)
    core = a[1:-1, 1:-1]
    nb = np.stack(
        [
            a[1 + dr : a.shape[0] - 1 + dr, 1 + dc : a.shape[1] - 1 + dc]
            for dr in (-1, 0, 1)
            for dc in (-1, 0, 1)
            if (dr, dc) != (0, 0)
        ]
    )
    rr, cc = np.nonzero((core[None] > nb).all(0))
    rr, cc = rr + 1, cc + 1
    out = []
    for r, c in zip(rr, cc, strict=True):
        fr = [a[r - 1, c], a[r, c], a[r + 1, c]]
        fc = [a[r, c - 1], a[r, c], a[r, c + 1]]
        off = [0.5 * (f[0] - f[2]) / (f[0] - 2 * f[1] + f[2]) for f in (fr, fc)]
        out.append((r + off[0], c + off[1]))
    return np.asarray(out)


def nearest_distance(points, extrema):
    d = np.linalg.norm(np.asarray(points)[:, None, :] - extrema[None, :, :], axis=-1)
    return d.min(axis=1)


def jitter_tolerance(params, q, base=0.4):
    """`base` px + half the jitter difference of the two scan lines around each label row."""
    jit = np.asarray(params.jitter)
    i0 = np.clip(np.floor(q[:, 0]).astype(int), 0, len(jit) - 2)
    return base + 0.5 * np.abs(jit[i0 + 1] - jit[i0])


def strong_params(seed=0, cfg=STRONG):
    return warp.sample_params(jax.random.key(seed), cfg, 1.0, (H, W))


# --- identity and exactness ---------------------------------------------------------------------


@pytest.mark.parametrize("order", [1, 3])
def test_zero_config_warp_is_identity(order):
    rng = np.random.default_rng(0)
    clean = jnp.asarray(rng.random(CLEAN), jnp.float32)
    params = warp.sample_params(jax.random.key(3), clean_config().warp, 0.2074, (H, W))
    disp = warp.displacement_field(params, (H, W))
    assert np.array_equal(np.asarray(disp), np.zeros((H, W, 2)))
    img = warp.warp_image(clean, disp, (M, M), order)
    np.testing.assert_array_equal(np.asarray(img), np.asarray(clean)[M : M + H, M : M + W])
    pts = jnp.asarray(rng.uniform(-5, H + 5, (50, 2)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(warp.inverse_map(params, pts, (H, W))), pts)


@pytest.mark.parametrize("order", [1, 3])
@pytest.mark.parametrize("shift", [(3, -2), (-7, 5)])
def test_integer_shift_is_exact(order, shift):
    clean = jnp.asarray(np.random.default_rng(1).random(CLEAN), jnp.float32)
    disp = jnp.broadcast_to(jnp.asarray(shift, jnp.float32), (H, W, 2))
    img = warp.warp_image(clean, disp, (M, M), order)
    r0, c0 = M + shift[0], M + shift[1]
    np.testing.assert_array_equal(np.asarray(img), np.asarray(clean)[r0 : r0 + H, c0 : c0 + W])


def test_subpixel_sampling_matches_smooth_function():
    """Cubic sampling of a band-limited image at fractional positions is accurate (and better
    than bilinear): a wrong weight or a swapped axis would fail this."""
    r = np.arange(CLEAN[0])[:, None]
    c = np.arange(CLEAN[1])[None, :]
    f = lambda r, c: np.sin(2 * np.pi * r / 17.0) * np.cos(2 * np.pi * c / 23.0 + 0.3)  # noqa: E731
    clean = jnp.asarray(f(r, c), jnp.float32)
    coords = np.random.default_rng(2).uniform(M, M + H, (500, 2))
    truth = f(coords[:, 0], coords[:, 1])
    err3 = np.abs(np.asarray(warp.sample_image(clean, jnp.asarray(coords), 3)) - truth).max()
    err1 = np.abs(np.asarray(warp.sample_image(clean, jnp.asarray(coords), 1)) - truth).max()
    assert err3 < 5e-3 and err1 < 5e-2 and err3 < err1 / 3


# --- the physical components --------------------------------------------------------------------


def test_displacement_components_have_their_shapes():
    one = lambda **kw: warp.sample_params(  # noqa: E731
        jax.random.key(5), WarpConfig(**{**_OFF, **kw}), 0.5, (H, W)
    )
    # linear drift: affine in slow time τ = row + col/W, zero mean over the frame
    p = one(linear_drift_max_frac=0.05)
    d = np.asarray(warp.displacement_field(p, (H, W)))
    tau = np.arange(H)[:, None] + np.arange(W)[None, :] / W
    for k in range(2):
        np.testing.assert_allclose(d[..., k], p.linear[k] * (tau - tau.mean()), atol=1e-5)
    # jitter: along the fast axis only, constant along each line, rms ≈ 0.2 Å / 0.5 Å/px
    d = np.asarray(warp.displacement_field(one(jitter_rms_min_A=0.2, jitter_rms_max_A=0.2), (H, W)))
    assert np.all(d[..., 0] == 0) and np.allclose(d[..., 1], d[:, :1, 1])
    assert 0.4 * 0.7 < d[:, 0, 1].std() < 0.4 * 1.3
    # flyback: fast axis only, identical for every line, exponential decay along it
    p = one(flyback_amp_max_A=1.0, flyback_decay_min_px=5.0, flyback_decay_max_px=5.0)
    d = np.asarray(warp.displacement_field(p, (H, W)))
    assert np.all(d[..., 0] == 0) and np.allclose(d[..., 1], d[:1, :, 1])
    np.testing.assert_allclose(d[0, :, 1], p.flyback_amp * np.exp(-np.arange(W) / 5.0), rtol=1e-5)
    # non-linear drift: a function of slow time only, zero mean, rms within the prior
    p = one(nonlinear_drift_rms_max_A=1.0)
    d = np.asarray(warp.displacement_field(p, (H, W)))
    assert np.abs(d.mean(axis=(0, 1))).max() < 0.05
    assert 0 < np.sqrt((d[:, 0] ** 2).sum(-1).mean()) <= 2.0 + 1e-4  # 1 Å at 0.5 Å/px
    assert np.abs(np.diff(d[:, :, :], axis=0)).max() < 0.5  # smooth


_OFF = dict(
    linear_drift_max_frac=0.0,
    nonlinear_drift_rms_max_A=0.0,
    jitter_rms_min_A=0.0,
    jitter_rms_max_A=0.0,
    flyback_amp_max_A=0.0,
)


# --- the label map ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_inverse_map_roundtrip(seed):
    params = strong_params(seed)
    x = jnp.asarray(np.random.default_rng(seed).uniform(-2, H + 2, (400, 2)), jnp.float32)
    q = warp.inverse_map(params, x, (H, W), n_iter=12)
    np.testing.assert_allclose(warp.forward_map(params, q, (H, W)), x, atol=2e-3)
    assert np.median(np.linalg.norm(np.asarray(q - x), axis=-1)) > 0.5  # the warp is strong


@pytest.mark.parametrize(("seed", "jitter_px"), [(0, 0.25), (1, 0.25), (2, 0.4), (3, 0.4)])
def test_warped_labels_sit_on_warped_blob_maxima(seed, jitter_px):
    """Each warped label lies on a local maximum of the warped blob image.

    Line jitter makes a blob between two scan lines a pair of row segments shifted by the two
    lines' offsets; the label interpolates between them, so the discrete peak may sit up to half
    the line-to-line jitter difference away: the tolerance is 0.4 px + that (`jitter_tolerance`).
    """
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(np.arange(5, H - 4, 10), np.arange(5, W - 4, 10), indexing="ij"), -1)
    x = g.reshape(-1, 2) + rng.uniform(-1.5, 1.5, (g.size // 2, 2))  # output px
    clean = render_blobs(x + M, CLEAN, sigma=1.6)
    cfg = dataclasses.replace(STRONG, jitter_rms_min_A=jitter_px, jitter_rms_max_A=jitter_px)
    params = strong_params(seed, cfg)
    img = warp.warp_image(jnp.asarray(clean), warp.displacement_field(params, (H, W)), (M, M))
    q = np.asarray(warp.inverse_map(params, jnp.asarray(x, jnp.float32), (H, W)))
    keep = np.all((q > 2) & (q < np.array([H, W]) - 3), axis=1)
    assert keep.sum() > 0.7 * len(x)
    q = q[keep]
    dist = nearest_distance(q, local_extrema(img, "max"))
    tol = jitter_tolerance(params, q)
    assert np.all(dist < tol), (dist, tol)
    assert np.median(dist) < 0.2
    # teeth: some unwarped labels are off their features by more than the tolerance
    assert np.any(nearest_distance(x[keep], local_extrema(img, "max")) > tol)


@pytest.mark.parametrize("seed", [0, 1])
def test_vacancy_label_stays_on_local_minimum(seed):
    """A missing blob in a lattice (like a W vacancy) is a local intensity minimum; after the warp
    the warped label still sits on one (same tolerance as the maxima)."""
    rng = np.random.default_rng(10 + seed)
    a = 6.0
    ij = np.stack(np.meshgrid(np.arange(-3, 15), np.arange(-3, 15), indexing="ij"), -1)
    ij = ij.reshape(-1, 2)
    lattice = ij * a + rng.uniform(0.1, 0.4, 2) * a  # output px, off the half-pixel grid
    # isolated vacancies (no two within 3 lattice steps), inside the frame
    cand = np.nonzero(np.all((ij % 3 == 0) & (lattice > 6) & (lattice < H - 6), axis=1))[0]
    vac = np.sort(rng.choice(cand, min(6, len(cand)), replace=False))
    assert len(vac) >= 4
    keep = np.setdiff1d(np.arange(len(lattice)), vac)
    clean = render_blobs(lattice[keep] + M, CLEAN, sigma=1.6)
    params = strong_params(seed)
    img = warp.warp_image(jnp.asarray(clean), warp.displacement_field(params, (H, W)), (M, M))
    x = lattice[vac]
    q = np.asarray(warp.inverse_map(params, jnp.asarray(x, jnp.float32), (H, W)))
    minima = local_extrema(img, "min")
    dist = nearest_distance(q, minima)
    tol = jitter_tolerance(params, q)
    assert np.all(dist < tol), (dist, tol)
    assert np.any(nearest_distance(x, minima) > tol)  # teeth: unwarped labels miss


def test_warp_is_differentiable():
    clean = jnp.asarray(render_blobs(np.array([[40.0, 40.0], [60, 50]]), CLEAN, 2.0))
    params = strong_params(0)

    def loss(p):
        return jnp.sum(warp.warp_image(clean, warp.displacement_field(p, (H, W)), (M, M)) ** 2)

    grads = jax.grad(loss)(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree_util.tree_leaves(grads))
    # finite difference along the flyback amplitude
    eps = 1e-2
    fd = (
        loss(params._replace(flyback_amp=params.flyback_amp + eps))
        - loss(params._replace(flyback_amp=params.flyback_amp - eps))
    ) / (2 * eps)
    np.testing.assert_allclose(grads.flyback_amp, fd, rtol=2e-2)
