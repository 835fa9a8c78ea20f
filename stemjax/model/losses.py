"""Per-pixel losses for rare-defect segmentation (pure, jittable functions of arrays).

Logits are (..., C) channel-last (the U-Net's (B, H, W, C)); targets are either an integer
class map (...) with ids in [0, C) (0 = background) or float heatmaps (B, C, H, W) channel-first,
as rendered by `stemjax.trainingdata.targets`. Defects cover ~1–3 % of pixels, so the losses take
per-class weights (see `class_weights_from_frequencies`) and are weighted means: the sum of
w[class] × loss over pixels divided by the sum of w[class], so the scale does not depend on the
weights' overall level or on how many defects an image happens to hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp

LOSS_KINDS = ("ce", "focal")


def _pixel_weights(class_map, class_weights, dtype):
    if class_weights is None:
        return jnp.ones(class_map.shape, dtype)
    return jnp.asarray(class_weights, dtype)[class_map]


def _weighted_mean(values, weights):
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), jnp.finfo(values.dtype).tiny)


def _modulator(p_true, gamma):
    """(1 − p)**gamma, with the base floored so the gradient stays finite at p = 1."""
    base = jnp.clip(1.0 - p_true, 1e-12, 1.0)
    return base**gamma


def weighted_cross_entropy(logits, class_map, class_weights=None):
    """Class-weighted softmax cross-entropy; scalar.

    logits (..., C) float; class_map (...) int ids in [0, C); class_weights (C,) or None
    (uniform). Returns Σ w[y]·CE / Σ w[y] over all pixels.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, class_map[..., None].astype(jnp.int32), axis=-1)[..., 0]
    return _weighted_mean(ce, _pixel_weights(class_map, class_weights, ce.dtype))


def focal_loss(logits, class_map, gamma: float = 2.0, class_weights=None):
    """Focal loss (Lin et al. 2017): (1 − p_y)**gamma · CE, class-weighted mean; scalar.

    Down-weights the many easy background pixels. class_weights (C,) plays the role of the
    per-class alpha. gamma = 0 gives `weighted_cross_entropy` exactly.
    """
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    logp_y = jnp.take_along_axis(logp, class_map[..., None].astype(jnp.int32), axis=-1)[..., 0]
    loss = -_modulator(jnp.exp(logp_y), gamma) * logp_y
    return _weighted_mean(loss, _pixel_weights(class_map, class_weights, loss.dtype))


def heatmap_loss(logits, heatmaps, class_weights=None, gamma: float = 0.0, channel_axis: int = -3):
    """Softmax cross-entropy against soft targets; scalar.

    logits (B, H, W, C); heatmaps (B, C, H, W) with the class on `channel_axis` (channel 0 =
    background), renormalised to sum 1 per pixel. Per-pixel weight Σ_c t_c·w_c, so one-hot
    heatmaps give `weighted_cross_entropy`. gamma > 0 applies the focal factor per channel,
    Σ_c t_c (1 − p_c)**gamma (−log p_c), which reduces to `focal_loss` for one-hot targets.
    """
    t = jnp.moveaxis(heatmaps.astype(jnp.float32), channel_axis, -1)
    if t.shape != logits.shape:
        raise ValueError(
            f"heatmaps {heatmaps.shape} (class axis {channel_axis}) do not match logits "
            f"{logits.shape}"
        )
    t = t / jnp.maximum(jnp.sum(t, axis=-1, keepdims=True), 1e-12)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    per_class = -logp if gamma == 0 else -_modulator(jnp.exp(logp), gamma) * logp
    loss = jnp.sum(t * per_class, axis=-1)
    if class_weights is None:
        weights = jnp.ones(loss.shape, loss.dtype)
    else:
        weights = jnp.sum(t * jnp.asarray(class_weights, t.dtype), axis=-1)
    return _weighted_mean(loss, weights)


def class_weights_from_frequencies(freqs, power: float = 0.5):
    """Per-class weights ∝ frequency**(−power), mean 1 over the classes present; (C,) float32.

    freqs (C,): pixel counts or fractions per class. power 0 → all ones; 1 → full inverse
    frequency. A class with zero frequency (absent from the estimate but possible later) gets
    the largest weight of the present classes rather than infinity.
    """
    f = jnp.asarray(freqs, jnp.float32)
    present = f > 0
    f = f / jnp.sum(f)
    raw = jnp.where(present, jnp.where(present, f, 1.0) ** (-power), 0.0)
    n_present = jnp.maximum(jnp.sum(present), 1)
    w = raw / (jnp.sum(raw) / n_present)
    return jnp.where(present, w, jnp.max(w))


@dataclass
class LossConfig:
    """Loss choice (Hydra schema). kind: 'ce' (class-weighted cross-entropy) | 'focal';
    gamma: focal exponent (ignored for 'ce'); weight_power: class weights ∝ freq**(−power)
    when frequencies are given to `make_loss` (0 → unweighted)."""

    kind: str = "ce"
    gamma: float = 2.0
    weight_power: float = 0.5


def make_loss(cfg: LossConfig, class_frequencies=None) -> Callable:
    """`(logits (B, H, W, C), targets) → scalar` for the configured loss.

    targets: an integer class map (B, H, W) or float heatmaps (B, C, H, W) (dispatched on
    dtype at trace time). class_frequencies (C,) (e.g. pixel counts over a few training
    batches) set the class weights via `class_weights_from_frequencies(·, cfg.weight_power)`;
    None → unweighted.
    """
    if cfg.kind not in LOSS_KINDS:
        raise ValueError(f"loss.kind must be one of {LOSS_KINDS}, got {cfg.kind!r}")
    if cfg.kind == "focal" and cfg.gamma < 0:
        raise ValueError(f"loss.gamma must be >= 0, got {cfg.gamma}")
    weights = None
    if class_frequencies is not None and cfg.weight_power != 0:
        weights = class_weights_from_frequencies(class_frequencies, cfg.weight_power)
    gamma = float(cfg.gamma) if cfg.kind == "focal" else 0.0

    def loss_fn(logits, targets):
        if jnp.issubdtype(targets.dtype, jnp.integer):
            if gamma == 0:
                return weighted_cross_entropy(logits, targets, weights)
            return focal_loss(logits, targets, gamma, weights)
        return heatmap_loss(logits, targets, weights, gamma=gamma)

    return loss_fn
