"""Per-pixel losses and class weights (stemjax.model.losses)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stemjax.model import (
    LossConfig,
    class_weights_from_frequencies,
    focal_loss,
    heatmap_loss,
    make_loss,
    weighted_cross_entropy,
)

C = 4


def _case(seed=0, shape=(2, 8, 8)):
    """Random class map (mostly background) and random logits."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    cmap = jax.random.choice(k1, C, shape, p=jnp.asarray([0.85, 0.08, 0.05, 0.02]))
    logits = jax.random.normal(k2, (*shape, C))
    return logits, cmap.astype(jnp.int32)


def _margin_logits(cmap, margin):
    """Logits with `margin` at the true class (negative margin: confidently wrong)."""
    return margin * jax.nn.one_hot(cmap, C)


def _one_hot_heatmaps(cmap):
    return jnp.moveaxis(jax.nn.one_hot(cmap, C), -1, -3)  # (B, C, H, W)


WEIGHTS = jnp.asarray([0.2, 1.0, 1.5, 2.0])
LOSSES = {
    "ce": lambda lg, cm, w: weighted_cross_entropy(lg, cm, w),
    "focal": lambda lg, cm, w: focal_loss(lg, cm, 2.0, w),
    "heatmap": lambda lg, cm, w: heatmap_loss(lg, _one_hot_heatmaps(cm), w),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_perfect_logits_give_zero_and_wrong_logits_more(name):
    _, cmap = _case()
    f = LOSSES[name]
    perfect = float(f(_margin_logits(cmap, 30.0), cmap, WEIGHTS))
    uniform = float(f(jnp.zeros((*cmap.shape, C)), cmap, WEIGHTS))
    wrong = float(f(_margin_logits(cmap, -5.0), cmap, WEIGHTS))
    assert perfect < 1e-6
    assert wrong > uniform > 0.1


def test_weighted_ce_matches_hand_computation():
    logits, cmap = _case(1)
    logp = np.asarray(jax.nn.log_softmax(logits, -1))
    y = np.asarray(cmap)
    ce = -np.take_along_axis(logp, y[..., None], -1)[..., 0]
    w = np.asarray(WEIGHTS)[y]
    expected = (w * ce).sum() / w.sum()
    np.testing.assert_allclose(weighted_cross_entropy(logits, cmap, WEIGHTS), expected, rtol=1e-5)
    np.testing.assert_allclose(weighted_cross_entropy(logits, cmap), ce.mean(), rtol=1e-5)
    # normalised by the sum of weights: scaling all weights changes nothing
    np.testing.assert_allclose(
        weighted_cross_entropy(logits, cmap, 7.0 * WEIGHTS), expected, rtol=1e-5
    )


@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_focal_with_gamma_zero_equals_cross_entropy(weights):
    logits, cmap = _case(2)
    np.testing.assert_allclose(
        focal_loss(logits, cmap, 0.0, weights),
        weighted_cross_entropy(logits, cmap, weights),
        rtol=1e-6,
    )


def test_focal_down_weights_easy_pixels():
    _, cmap = _case(3)
    easy = _margin_logits(cmap, 3.0)
    ratio = float(focal_loss(easy, cmap, 2.0) / weighted_cross_entropy(easy, cmap))
    p = np.exp(3.0) / (np.exp(3.0) + C - 1)  # ≈ 0.87 on every pixel
    np.testing.assert_allclose(ratio, (1 - p) ** 2, rtol=1e-4)  # ≈ 0.017


def test_heatmap_loss_reduces_to_class_map_losses_on_one_hot_targets():
    logits, cmap = _case(4)
    hm = _one_hot_heatmaps(cmap)
    np.testing.assert_allclose(
        heatmap_loss(logits, hm, WEIGHTS), weighted_cross_entropy(logits, cmap, WEIGHTS), rtol=1e-5
    )
    np.testing.assert_allclose(
        heatmap_loss(logits, hm, WEIGHTS, gamma=2.0),
        focal_loss(logits, cmap, 2.0, WEIGHTS),
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="do not match"):
        heatmap_loss(logits, hm[:, :2], WEIGHTS)


def test_heatmap_loss_is_minimal_at_the_soft_target():
    t = jnp.asarray([0.7, 0.3, 0.0, 0.0])
    hm = jnp.broadcast_to(t[None, :, None, None], (1, C, 2, 2))
    at_target = heatmap_loss(jnp.broadcast_to(jnp.log(t + 1e-9), (1, 2, 2, C)), hm)
    one_hot = heatmap_loss(jnp.broadcast_to(jnp.asarray([9.0, 0, 0, 0]), (1, 2, 2, C)), hm)
    entropy = -(0.7 * np.log(0.7) + 0.3 * np.log(0.3))
    np.testing.assert_allclose(at_target, entropy, rtol=1e-4)
    assert one_hot > at_target


def test_class_weights_favour_rare_classes():
    w = np.asarray(class_weights_from_frequencies(jnp.asarray([9700.0, 200.0, 100.0, 0.0]), 0.5))
    assert w[2] > w[1] > w[0]
    np.testing.assert_allclose(w[:3].mean(), 1.0, rtol=1e-6)  # mean 1 over present classes
    np.testing.assert_allclose(w[2] / w[1], np.sqrt(2.0), rtol=1e-5)  # (f1 / f2) ** power
    assert w[3] == pytest.approx(w.max())  # absent class: largest present weight, finite
    ones = class_weights_from_frequencies(jnp.asarray([0.9, 0.1]), power=0.0)
    np.testing.assert_allclose(ones, [1.0, 1.0])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_gradients_are_finite_even_at_saturated_logits(name):
    _, cmap = _case(5)
    for logits in (_margin_logits(cmap, 100.0), _margin_logits(cmap, -100.0), _case(5)[0]):
        g = jax.grad(LOSSES[name])(logits, cmap, WEIGHTS)
        assert g.shape == logits.shape and bool(jnp.all(jnp.isfinite(g)))


def test_make_loss_dispatches_on_target_dtype_and_jits():
    logits, cmap = _case(6)
    freqs = jnp.bincount(cmap.ravel(), length=C)
    weights = class_weights_from_frequencies(freqs, 0.5)
    ce = jax.jit(make_loss(LossConfig(kind="ce"), freqs))
    np.testing.assert_allclose(
        ce(logits, cmap), weighted_cross_entropy(logits, cmap, weights), 1e-5
    )
    np.testing.assert_allclose(
        ce(logits, _one_hot_heatmaps(cmap).astype(jnp.float32)),
        weighted_cross_entropy(logits, cmap, weights),
        rtol=1e-5,
    )
    focal = make_loss(LossConfig(kind="focal", gamma=1.5, weight_power=0.0), freqs)
    np.testing.assert_allclose(focal(logits, cmap), focal_loss(logits, cmap, 1.5), rtol=1e-6)
    with pytest.raises(ValueError, match="loss.kind"):
        make_loss(LossConfig(kind="dice"))
