"""Scan distortions: the geometric warp of the image and the same warp applied to the labels.

Conventions (used by the whole `corrupt` package):

- Coordinates are (row, col) in output pixels, pixel centres at integers; row = slow scan axis,
  col = fast scan axis. Output pixel (i, j) nominally sits at clean-image pixel (i + m_r, j + m_c)
  with margins (m_r, m_c) = ((Hc − H)//2, (Wc − W)//2) (`margins`).
- Physical model: the probe for output pixel q actually sat at q + d(q) (output-pixel units), so
  the observed image is the clean image sampled at q + d(q) + m. A feature at true position x
  (output-pixel units, i.e. clean px − m) appears at the q solving q + d(q) = x (`inverse_map`).
- d(q) is an analytic function of continuous coordinates (`displacement`), so the image (d on the
  pixel grid) and the labels (d at arbitrary q) use exactly the same warp.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from stemjax.corrupt._rand import in_range, uniform_normal
from stemjax.corrupt.config import WarpConfig


class WarpParams(NamedTuple):
    """One image's sampled scan distortion; all lengths in output pixels (px).

    linear: (2,) drift per line pitch (row = slow-axis scale, col = shear), dimensionless.
    nl_cos, nl_sin: (2, K) coefficients of cos/sin(π k τ/H), k = 1..K, px.
    nl_offset: (2,) mean of the non-linear term over the frame (subtracted), px.
    jitter: (H,) fast-axis offset of each scan line, px.
    flyback_amp: () fast-axis displacement at the start of a line, px.
    flyback_decay: () e-folding length of the flyback along the fast axis, px.
    """

    linear: jax.Array
    nl_cos: jax.Array
    nl_sin: jax.Array
    nl_offset: jax.Array
    jitter: jax.Array
    flyback_amp: jax.Array
    flyback_decay: jax.Array


def margins(clean_shape: tuple[int, int], out_shape: tuple[int, int]) -> tuple[int, int]:
    """Margins (m_r, m_c) in px between the clean canvas and the output image (static ints)."""
    (hc, wc), (h, w) = clean_shape[-2:], out_shape
    if hc < h or wc < w:
        raise ValueError(f"clean image {clean_shape} is smaller than the output {out_shape}")
    return (hc - h) // 2, (wc - w) // 2


def clean_px_to_output_px(points_clean_px: jax.Array, margin: tuple[int, int]) -> jax.Array:
    """(…, 2) label positions in clean-image pixels → output pixels (subtract the margin)."""
    return points_clean_px - jnp.asarray(margin, points_clean_px.dtype)


def identity_params(out_shape: tuple[int, int], n_modes: int = 0) -> WarpParams:
    """Warp parameters with d ≡ 0 (float32)."""
    z = jnp.zeros((), jnp.float32)
    return WarpParams(
        linear=jnp.zeros(2, jnp.float32),
        nl_cos=jnp.zeros((2, n_modes), jnp.float32),
        nl_sin=jnp.zeros((2, n_modes), jnp.float32),
        nl_offset=jnp.zeros(2, jnp.float32),
        jitter=jnp.zeros(out_shape[0], jnp.float32),
        flyback_amp=z,
        flyback_decay=z + 1.0,
    )


def _slow_time(rc: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
    """Slow-scan time τ = row + col/W of each position, in line pitches."""
    return rc[..., 0] + rc[..., 1] / out_shape[1]


def _nonlinear(tau: jax.Array, nl_cos, nl_sin, h: int) -> jax.Array:
    """Σ_k c_k cos(π k τ/h) + s_k sin(π k τ/h) for both components: (…,) → (…, 2), px."""
    k = jnp.arange(1, nl_cos.shape[-1] + 1, dtype=tau.dtype)
    phase = (jnp.pi / h) * tau[..., None, None] * k  # (…, 1, K)
    # elementwise sums, not matmuls: no reduced-precision (TF32/bf16) dots on accelerators
    return jnp.sum(jnp.cos(phase) * nl_cos + jnp.sin(phase) * nl_sin, axis=-1)


def displacement(params: WarpParams, rc: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
    """Probe displacement d(q) (…, 2) in px at output positions `rc` (…, 2) (row, col), px.

    Continuous in `rc`: jitter is linearly interpolated between lines (constant beyond the first
    and last line), the flyback is evaluated at max(col, 0).
    """
    h, w = out_shape
    rc = jnp.asarray(rc, jnp.float32)
    tau = _slow_time(rc, out_shape)
    tau0 = (h - 1) / 2 + (w - 1) / (2 * w)  # mean slow time over the frame
    d = params.linear * (tau - tau0)[..., None]
    if params.nl_cos.shape[-1]:
        d = d + _nonlinear(tau, params.nl_cos, params.nl_sin, h) - params.nl_offset
    r = jnp.clip(rc[..., 0], 0.0, h - 1.0)
    i0 = jnp.clip(jnp.floor(r).astype(jnp.int32), 0, max(h - 2, 0))
    f = r - i0
    i1 = jnp.minimum(i0 + 1, h - 1)
    jit = params.jitter[i0] * (1.0 - f) + params.jitter[i1] * f
    decay = jnp.maximum(params.flyback_decay, 1e-3)
    fly = params.flyback_amp * jnp.exp(-jnp.maximum(rc[..., 1], 0.0) / decay)
    return d + jnp.stack([jnp.zeros_like(jit), jit + fly], axis=-1)


def pixel_grid(out_shape: tuple[int, int]) -> jax.Array:
    """(H, W, 2) float32 (row, col) coordinates of the output pixel centres."""
    r, c = jnp.meshgrid(
        jnp.arange(out_shape[0], dtype=jnp.float32),
        jnp.arange(out_shape[1], dtype=jnp.float32),
        indexing="ij",
    )
    return jnp.stack([r, c], axis=-1)


def displacement_field(params: WarpParams, out_shape: tuple[int, int]) -> jax.Array:
    """d on the output pixel grid: (H, W, 2) px."""
    return displacement(params, pixel_grid(out_shape), out_shape)


def forward_map(params: WarpParams, q: jax.Array, out_shape: tuple[int, int]) -> jax.Array:
    """Where the probe really was for output position q: q + d(q) (…, 2), px."""
    return q + displacement(params, q, out_shape)


def inverse_map(
    params: WarpParams, x: jax.Array, out_shape: tuple[int, int], n_iter: int = 12
) -> jax.Array:
    """Output position q of a feature at true position x (…, 2) px: solves q + d(q) = x.

    Fixed-point iteration q ← x − d(q) from q = x. Converges while the warp is invertible: the
    row equation only involves the slow drifts (|∂d_r/∂q| ≲ |s_row| + non-linear slope), and the
    column equation the flyback slope |A|/λ once the row has converged (jitter enters only
    through the row). The residual |forward_map(q) − x| is what `corrupt` reports.
    """
    x = jnp.asarray(x, jnp.float32)
    body = lambda _, q: x - displacement(params, q, out_shape)  # noqa: E731
    return jax.lax.fori_loop(0, n_iter, body, x)


def sample_params(
    key: jax.Array, cfg: WarpConfig, pixel_size_A, out_shape: tuple[int, int]
) -> WarpParams:
    """Draw one image's `WarpParams` from the priors in `cfg` (Å converted with `pixel_size_A`)."""
    h, w = out_shape
    n = cfg.nonlinear_drift_modes
    u, z = uniform_normal(key, 6, (4 * n + h,))
    px = 1.0 / jnp.asarray(pixel_size_A, jnp.float32)
    linear = in_range(u[:2], -cfg.linear_drift_max_frac, cfg.linear_drift_max_frac)

    k = jnp.arange(1, n + 1, dtype=jnp.float32)
    c = z[: 2 * n].reshape(2, n) / k
    s = z[2 * n : 4 * n].reshape(2, n) / k
    # rescale so that the rms over the frame's line times is the sampled one
    tau_lines = jnp.arange(h, dtype=jnp.float32) + (w - 1) / (2 * w)
    f = _nonlinear(tau_lines, c, s, h) if n else jnp.zeros((h, 2))
    mean = f.mean(axis=0)
    rms = jnp.sqrt(jnp.mean(jnp.sum((f - mean) ** 2, axis=-1)))
    target = in_range(u[2], 0.0, cfg.nonlinear_drift_rms_max_A) * px
    scale = target / jnp.maximum(rms, 1e-12)

    sigma = in_range(u[3], cfg.jitter_rms_min_A, cfg.jitter_rms_max_A) * px
    fa = cfg.flyback_amp_max_A
    return WarpParams(
        linear=linear,
        nl_cos=c * scale,
        nl_sin=s * scale,
        nl_offset=mean * scale,
        jitter=sigma * z[4 * n :],
        flyback_amp=in_range(u[4], -fa, fa) * px,
        flyback_decay=in_range(u[5], cfg.flyback_decay_min_px, cfg.flyback_decay_max_px),
    )


def _cubic_weights(t: jax.Array) -> jax.Array:
    """Catmull-Rom (Keys a = −½) weights of taps −1, 0, 1, 2 at offset t ∈ [0, 1): (…, 4).

    Exactly (0, 1, 0, 0) at t = 0, so integer shifts reproduce the input bit for bit.
    """
    t2, t3 = t * t, t * t * t
    return jnp.stack(
        [
            -0.5 * t3 + t2 - 0.5 * t,
            1.5 * t3 - 2.5 * t2 + 1.0,
            -1.5 * t3 + 2.0 * t2 + 0.5 * t,
            0.5 * t3 - 0.5 * t2,
        ],
        axis=-1,
    )


def sample_image(img: jax.Array, coords: jax.Array, order: int = 3) -> jax.Array:
    """Interpolate `img` (Hc, Wc) at (…, 2) (row, col) pixel coordinates; edges clamp.

    order 3: separable Catmull-Rom cubic (interpolating, C¹, exact at integers); order 1:
    bilinear. Differentiable in both the image and the coordinates.
    """
    if order not in (1, 3):
        raise ValueError(f"interp_order must be 1 or 3, got {order}")
    hc, wc = img.shape
    base = jnp.floor(coords)
    t = coords - base
    base = base.astype(jnp.int32)
    if order == 3:
        taps = jnp.arange(-1, 3)
        wr, wc_ = _cubic_weights(t[..., 0]), _cubic_weights(t[..., 1])
    else:
        taps = jnp.arange(0, 2)
        wr = jnp.stack([1.0 - t[..., 0], t[..., 0]], axis=-1)
        wc_ = jnp.stack([1.0 - t[..., 1], t[..., 1]], axis=-1)
    rows = jnp.clip(base[..., 0, None] + taps, 0, hc - 1)  # (…, n)
    cols = jnp.clip(base[..., 1, None] + taps, 0, wc - 1)  # (…, n)
    vals = img[rows[..., :, None], cols[..., None, :]]  # (…, n, n)
    # elementwise, not einsum: exact at integers and full float32 precision on accelerators
    return jnp.sum(vals * wr[..., :, None] * wc_[..., None, :], axis=(-2, -1))


def warp_image(
    clean: jax.Array, disp: jax.Array, margin: tuple[int, int], order: int = 3
) -> jax.Array:
    """Observed (H, W) image: `clean` (Hc, Wc) sampled at q + d(q) + margin, with d = `disp`
    (H, W, 2) px on the output grid."""
    grid = pixel_grid(disp.shape[:2])
    coords = grid + disp + jnp.asarray(margin, jnp.float32)
    return sample_image(clean, coords, order)
