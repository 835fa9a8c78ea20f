"""Per-pixel training targets rendered from (warped) labelled points.

Two forms (a config choice): 'disk' — an (H, W) int32 class map, each labelled point painted as
a disk of its class id (0 = background); 'gaussian' — (C, H, W) float32 heatmaps, one Gaussian
of unit peak per point in its class channel (channel 0 = background = 1 − max of the others).
"""

import jax.numpy as jnp
import numpy as np


def _stamp(points_px, classes, valid, shape, radius_px: float):
    """Pixels within `radius_px` of each labelled point, shared by both target forms.

    Returns flat pixel indices (P, S), squared distances (P, S) in px² from the sub-pixel point,
    and a mask (P, S): inside the image, the point valid and a defect (class > 0).
    """
    r = int(np.ceil(radius_px))
    d = np.arange(-r, r + 1)
    offsets = jnp.asarray(np.stack(np.meshgrid(d, d, indexing="ij"), -1).reshape(-1, 2))
    centre = jnp.round(points_px).astype(jnp.int32)
    pix = centre[:, None, :] + offsets[None]  # (P, S, 2)
    dist2 = jnp.sum((offsets[None] - (points_px - centre)[:, None, :]) ** 2, -1)
    ok = valid[:, None] & (classes[:, None] > 0)
    ok &= (pix[..., 0] >= 0) & (pix[..., 0] < shape[0])
    ok &= (pix[..., 1] >= 0) & (pix[..., 1] < shape[1])
    flat = jnp.clip(pix[..., 0], 0, shape[0] - 1) * shape[1]
    flat = flat + jnp.clip(pix[..., 1], 0, shape[1] - 1)
    return flat, dist2, ok


def render_class_map(points_px, classes, valid, shape, radius_px: float = 2.5):
    """(H, W) int32 class map: disks of radius `radius_px` (px) at points (P, 2) (row, col).

    Points with valid False or class 0 paint nothing; where disks overlap the larger id wins.
    """
    flat, dist2, ok = _stamp(points_px, classes, valid, shape, radius_px)
    value = jnp.where(ok & (dist2 <= radius_px**2), classes[:, None], 0).astype(jnp.int32)
    out = jnp.zeros(shape[0] * shape[1], jnp.int32).at[flat.reshape(-1)].max(value.reshape(-1))
    return out.reshape(shape)


def render_heatmaps(points_px, classes, valid, shape, num_classes: int, sigma_px: float = 1.5):
    """(C, H, W) float32 heatmaps: unit-peak Gaussians (σ in px) per point in its class channel."""
    flat, dist2, ok = _stamp(points_px, classes, valid, shape, 3.0 * sigma_px)
    weight = jnp.where(ok, jnp.exp(-dist2 / (2.0 * sigma_px**2)), 0.0)
    chan = jnp.broadcast_to(classes[:, None], flat.shape)
    out = jnp.zeros((num_classes, shape[0] * shape[1]), jnp.float32)
    out = out.at[chan.reshape(-1), flat.reshape(-1)].max(weight.reshape(-1))
    out = out.reshape(num_classes, *shape)
    background = 1.0 - jnp.max(out[1:], axis=0)
    return out.at[0].set(background)
