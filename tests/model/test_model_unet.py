"""The Flax NNX U-Net (stemjax.model.unet): shapes, configs, modes and a tiny overfit run."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from omegaconf import OmegaConf

from stemjax.model import LossConfig, ModelConfig, UNet, make_loss, param_count
from stemjax.specimen import conf_dir

# Eager initialisation compiles one threefry program per distinct kernel shape (~1 s each on a
# loaded 2-core CPU), so the tests draw parameters with the much cheaper-to-compile 'rbg' PRNG
# (same distributions), reuse TINY's shapes and count parameters abstractly.
TINY = ModelConfig(depth=2, width=4, blocks_per_level=1, num_classes=3)


def _rngs(seed=0):
    return nnx.Rngs(jax.random.key(seed, impl="rbg"))


def _forward(model, x, **kw):
    return nnx.jit(lambda m, x: m(x, **kw))(model, x)


def _abstract(cfg):
    """The model's structure with ShapeDtypeStruct leaves: no initialisation compute."""
    return nnx.eval_shape(lambda: UNet(cfg, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def tiny():
    return UNet(TINY, rngs=_rngs())


@pytest.mark.parametrize("shape", [(1, 16, 16), (2, 8, 24), (1, 32, 16, 1)])
def test_output_shape_and_dtype(tiny, shape):
    y = _forward(tiny, jnp.ones(shape, jnp.float32))
    assert y.shape == (shape[0], shape[1], shape[2], TINY.num_classes)
    assert y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(norm="batch", activation="relu", downsample="conv", upsample="resize"),
        dict(norm="layer", activation="silu", residual=False, blocks_per_level=2),
        dict(norm="none", depth=1),
    ],
)
def test_architecture_options(overrides):
    cfg = dataclasses.replace(TINY, **overrides)
    y = _forward(UNet(cfg, rngs=_rngs(1)), jnp.ones((2, 8, 16)), deterministic=True)
    assert y.shape == (2, 8, 16, cfg.num_classes) and bool(jnp.all(jnp.isfinite(y)))


def test_indivisible_shape_and_bad_config_raise(tiny):
    with pytest.raises(ValueError, match=r"divisible by 4.*\(1, 18, 16, 1\)"):
        tiny(jnp.ones((1, 18, 16)))
    with pytest.raises(ValueError, match=r"divisible by 4.*\(2, 16, 10, 1\)"):
        _forward(tiny, jnp.ones((2, 16, 10)))
    with pytest.raises(ValueError, match="expects images"):
        tiny(jnp.ones((1, 16, 16, 3)))
    with pytest.raises(ValueError, match="model.norm"):
        UNet(dataclasses.replace(TINY, norm="instance"), rngs=nnx.Rngs(0))


def test_param_count_grows_with_width_and_depth(tiny):
    counts = {
        (d, w): param_count(_abstract(dataclasses.replace(TINY, depth=d, width=w)))
        for d, w in [(2, 4), (2, 8), (2, 16), (3, 4)]
    }
    assert counts[(2, 4)] == param_count(tiny)  # abstract and concrete agree
    assert counts[(2, 16)] > 3 * counts[(2, 8)] > 9 * counts[(2, 4)]  # convs scale ~ width²
    assert counts[(3, 4)] > 3 * counts[(2, 4)]
    assert param_count(tiny.head) == 4 * 3 + 3  # 1×1 conv 4 → 3 channels, with bias
    assert 5e6 < param_count(_abstract(ModelConfig())) < 5e7  # the default (unet.yaml) size


def test_train_eval_modes_control_dropout_and_batch_stats():
    cfg = dataclasses.replace(TINY, dropout=0.5, norm="batch")
    model = UNet(cfg, rngs=_rngs())
    x = jax.random.normal(jax.random.key(0), (2, 8, 8))
    call = nnx.jit(lambda m, x: m(x))  # state updates (RNG counts, BatchStat) propagate out
    stats0 = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    assert not np.allclose(call(model, x), call(model, x))  # training mode: fresh masks
    stats1 = nnx.state(model, nnx.BatchStat)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), stats0, stats1)
    assert any(jax.tree.leaves(changed))  # running statistics updated
    eval_view = nnx.view(model, deterministic=True, use_running_average=True)
    expected = call(eval_view, x)
    np.testing.assert_array_equal(call(eval_view, x), expected)
    np.testing.assert_array_equal(_forward(model, x, deterministic=True), expected)
    model.eval()
    np.testing.assert_array_equal(call(model, x), expected)
    stats2 = nnx.state(model, nnx.BatchStat)
    assert all(jax.tree.leaves(jax.tree.map(np.array_equal, stats1, stats2)))  # frozen in eval


@pytest.mark.parametrize("name", ["unet", "tiny"])
def test_model_yaml_matches_schema_and_builds(name):
    schema = OmegaConf.structured(ModelConfig)
    cfg = OmegaConf.to_object(
        OmegaConf.merge(schema, OmegaConf.load(conf_dir() / f"model/{name}.yaml"))
    )
    assert isinstance(cfg, ModelConfig) and cfg.num_classes == 8
    assert param_count(_abstract(cfg)) < (50_000 if name == "tiny" else 5e7)
    with pytest.raises(Exception, match="bogus"):
        OmegaConf.merge(schema, {"bogus": 1})


def _blob_batch(seed=0, n=2, size=32, per_class=3):
    """Noise with bright Gaussian blobs (class 1) and dark dips (class 2); disk class map."""
    rng = np.random.default_rng(seed)
    img = rng.normal(0.0, 0.3, (n, size, size)).astype(np.float32)
    cmap = np.zeros((n, size, size), np.int32)
    r, c = np.mgrid[:size, :size]
    centres = []
    for b in range(n):
        pts = []
        while len(pts) < 2 * per_class:
            p = rng.integers(4, size - 4, 2)
            if all(np.hypot(*(p - q)) > 7 for q in pts):
                pts.append(p)
        for i, (pr, pc) in enumerate(pts):
            cls = 1 if i < per_class else 2
            d2 = (r - pr) ** 2 + (c - pc) ** 2
            img[b] += (3.0 if cls == 1 else -3.0) * np.exp(-d2 / (2 * 1.5**2))
            cmap[b][d2 <= 4] = cls
            centres.append((b, pr, pc, cls))
    return jnp.asarray(img), jnp.asarray(cmap), centres


def test_overfit_tiny_batch_with_a_single_trace():
    images, cmap, centres = _blob_batch()
    cfg = ModelConfig(depth=2, width=8, blocks_per_level=1, num_classes=3)
    model = UNet(cfg, rngs=_rngs())
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    loss_fn = make_loss(LossConfig(kind="ce"), jnp.bincount(cmap.ravel(), length=3))
    traces = []

    @nnx.jit
    def train_step(model, optimizer, x, y):
        traces.append(1)  # Python side effect: runs only while tracing

        def objective(model):
            logits = model(x)
            return loss_fn(logits, y), logits

        (loss, logits), grads = nnx.value_and_grad(objective, has_aux=True)(model)
        optimizer.update(model, grads)
        return loss, optax.tree.norm(grads), logits

    losses = []
    for _ in range(40):
        loss, gnorm, logits = train_step(model, optimizer, images, cmap)
        assert np.isfinite(float(gnorm)) and float(gnorm) > 0
        losses.append(float(loss))
    assert len(traces) == 1
    assert int(optimizer.step[...]) == 40
    assert losses[-1] < losses[0] / 5, losses[::10]
    pred = np.asarray(jnp.argmax(logits, -1))  # the last step's forward pass
    hits = [pred[b, r, c] == cls for b, r, c, cls in centres]
    assert all(hits), hits
