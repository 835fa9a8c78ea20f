"""`corrupt` end to end: determinism, one trace, vmap, on-device, labels, configs."""

import dataclasses
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf

from stemjax.corrupt import CorruptionConfig, clean_config, corrupt, normalise_image
from stemjax.corrupt.config import WarpConfig

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "corruption"
H = W = 64
M = 20  # margin: ~4 Å at 0.2074 Å/px
PS = 0.2074  # Å/px
CLEAN = (H + 2 * M, W + 2 * M)

TRACES = {"n": 0}


def _counted(key, clean, points):
    TRACES["n"] += 1  # Python side effect: runs once per trace
    return corrupt(key, clean, points, CorruptionConfig(), pixel_size=PS, out_shape=(H, W))


CORRUPT_DEFAULT = jax.jit(_counted)


def lattice_image(seed=0, sigma_px=1.7):
    """Clean canvas with Gaussian blobs on a jittered square lattice (fraction of the beam) and
    the blob positions in output pixels."""
    rng = np.random.default_rng(seed)
    g = np.stack(np.meshgrid(np.arange(5, H - 4, 10), np.arange(5, W - 4, 10), indexing="ij"), -1)
    x = g.reshape(-1, 2) + rng.uniform(-1.5, 1.5, (g.size // 2, 2))
    p = x + M  # clean px
    r = np.arange(CLEAN[0])[:, None, None]
    c = np.arange(CLEAN[1])[None, :, None]
    blobs = np.exp(-((r - p[:, 0]) ** 2 + (c - p[:, 1]) ** 2) / (2 * sigma_px**2)).sum(-1)
    return jnp.asarray(0.002 + 0.03 * blobs, jnp.float32), jnp.asarray(x, jnp.float32)


CLEAN_IMG, POINTS = lattice_image()


def test_same_key_same_output_different_keys_differ():
    a = CORRUPT_DEFAULT(jax.random.key(0), CLEAN_IMG, POINTS)
    b = CORRUPT_DEFAULT(jax.random.key(0), CLEAN_IMG, POINTS)
    c = CORRUPT_DEFAULT(jax.random.key(1), CLEAN_IMG, POINTS)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.allclose(np.asarray(a[0]), np.asarray(c[0]))
    assert not np.allclose(np.asarray(a[1]), np.asarray(c[1]))


def test_jit_traces_once_across_keys():
    for i in range(4):
        jax.block_until_ready(CORRUPT_DEFAULT(jax.random.key(100 + i), CLEAN_IMG, POINTS))
    assert TRACES["n"] == 1


def test_default_output_is_normalised_and_labels_consistent():
    image, q, aux = CORRUPT_DEFAULT(jax.random.key(2), CLEAN_IMG, POINTS)
    image = np.asarray(image)
    assert image.shape == (H, W) and image.dtype == np.float32 and np.all(np.isfinite(image))
    q25, q50, q75 = np.quantile(image, [0.25, 0.5, 0.75])
    assert abs(q50) < 1e-5 and abs((q75 - q25) / 1.3489795 - 1) < 1e-4
    assert q.shape == POINTS.shape and q.dtype == jnp.float32
    assert float(aux["out_of_bounds_frac"]) == 0.0  # a 4 Å margin covers the default priors
    assert float(aux["point_residual_px"].max()) < 1e-3
    assert 20 * 20 * 6.24 * 0.7 < float(aux["electrons_per_pixel"]) < 45 * 20 * 6.25
    assert aux["displacement_px"].shape == (H, W, 2)


def test_vmap_over_batch_matches_single_images():
    keys = jax.random.split(jax.random.key(3), 3)
    cleans = jnp.stack([CLEAN_IMG, 1.5 * CLEAN_IMG, 0.5 * CLEAN_IMG])
    points = jnp.stack([POINTS, POINTS + 1.0, POINTS - 1.0])
    batched = jax.jit(jax.vmap(_counted))(keys, cleans, points)
    assert batched[0].shape == (3, H, W) and batched[1].shape == (3, *POINTS.shape)
    for i in range(3):
        single = CORRUPT_DEFAULT(keys[i], cleans[i], points[i])
        np.testing.assert_allclose(np.asarray(batched[1][i]), np.asarray(single[1]), atol=1e-5)
        for name in ("clean_warped", "displacement_px", "electrons_per_pixel"):
            np.testing.assert_allclose(batched[2][name][i], single[2][name], rtol=1e-6, atol=1e-6)
        # the batched and single programs round differently at the ulp level, and a Poisson
        # draw can flip on that (which also nudges the normalisation's quantiles): allow a few
        raw_b, raw_s = np.asarray(batched[2]["raw"][i]), np.asarray(single[2]["raw"])
        assert (np.abs(raw_b - raw_s) < 1e-3 * np.abs(raw_s).max()).mean() > 0.95
        assert np.corrcoef(np.ravel(batched[0][i]), np.ravel(single[0]))[0, 1] > 0.99


def test_runs_without_host_transfers():
    key, clean, points = jax.device_put((jax.random.key(4), CLEAN_IMG, POINTS))
    fresh = jax.jit(
        functools.partial(corrupt, cfg=CorruptionConfig(), pixel_size=PS, out_shape=(H, W))
    )
    with jax.transfer_guard("disallow"):
        out = fresh(key, clean, points)  # traced, compiled and run under the guard
        out = CORRUPT_DEFAULT(key, clean, points)
        jax.block_until_ready(out)


def test_clean_config_only_crops_and_normalises():
    cfg = OmegaConf.to_object(
        OmegaConf.merge(
            OmegaConf.structured(CorruptionConfig), OmegaConf.load(CONF_DIR / "none.yaml")
        )
    )
    f = functools.partial(corrupt, cfg=cfg, pixel_size=PS, out_shape=(H, W))
    image, q, aux = jax.jit(f)(
        jax.random.key(5), CLEAN_IMG, POINTS, dose_electrons_per_pixel=3745.0
    )
    crop = np.asarray(CLEAN_IMG)[M : M + H, M : M + W]
    np.testing.assert_array_equal(np.asarray(aux["clean_warped"]), crop)
    np.testing.assert_array_equal(np.asarray(q), np.asarray(POINTS))
    np.testing.assert_allclose(np.asarray(aux["raw"]), crop * 3745.0, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(image), normalise_image(crop), atol=1e-5)


def _peaks(img):
    a = np.asarray(img, np.float64)
    core = a[1:-1, 1:-1]
    nb = [
        a[1 + i : a.shape[0] - 1 + i, 1 + j : a.shape[1] - 1 + j]
        for i in (-1, 0, 1)
        for j in (-1, 0, 1)
        if (i, j) != (0, 0)
    ]
    rr, cc = np.nonzero((core[None] > np.stack(nb)).all(0))
    out = []
    for r, c in zip(rr + 1, cc + 1, strict=True):
        f = [(a[r - 1, c], a[r, c], a[r + 1, c]), (a[r, c - 1], a[r, c], a[r, c + 1])]
        out.append(
            [x + 0.5 * (u - w) / (u - 2 * v + w) for x, (u, v, w) in zip((r, c), f, strict=True)]
        )
    return np.asarray(out)


def test_pipeline_labels_follow_the_warp():
    """Strong scan distortion (no noise): each returned label is on a blob of the output image
    (and of aux clean_warped); the margin and Å→px conversions are wired consistently."""
    base = clean_config()
    strong = WarpConfig(
        linear_drift_max_frac=0.04,
        nonlinear_drift_rms_max_A=0.3,  # 1.45 px
        jitter_rms_min_A=0.03,  # 0.15 px
        jitter_rms_max_A=0.03,
        flyback_amp_max_A=0.6,  # 2.9 px
        flyback_decay_min_px=6.0,
        flyback_decay_max_px=10.0,
    )
    cfg = dataclasses.replace(base, warp=strong)
    f = jax.jit(functools.partial(corrupt, cfg=cfg, pixel_size=PS, out_shape=(H, W)))
    for seed in range(3):
        image, q, aux = f(jax.random.key(10 + seed), CLEAN_IMG, POINTS)
        q = np.asarray(q)
        keep = np.asarray(aux["inside"]) & np.all((q > 2) & (q < H - 3), axis=1)
        assert keep.sum() > 0.7 * len(q)
        for img in (image, aux["clean_warped"]):
            d = np.linalg.norm(q[keep][:, None] - _peaks(img)[None], axis=-1).min(1)
            assert d.max() < 0.5, d.max()
        moved = np.linalg.norm(q - np.asarray(POINTS), axis=-1)
        assert moved.max() > 1.0


def test_dose_override_traced_under_vmap():
    doses = jnp.asarray([500.0, 2000.0, 8000.0])
    cfg = dataclasses.replace(CorruptionConfig(), normalise=False)

    def one(key, dose):
        return corrupt(
            key,
            CLEAN_IMG,
            POINTS,
            cfg,
            pixel_size=PS,
            out_shape=(H, W),
            dose_electrons_per_pixel=dose,
        )[2]

    aux = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(6), 3), doses)
    np.testing.assert_array_equal(np.asarray(aux["electrons_per_pixel"]), np.asarray(doses))


# --- configs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(CONF_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_every_corruption_config_merges_into_the_schema(path):
    merged = OmegaConf.merge(OmegaConf.structured(CorruptionConfig), OmegaConf.load(path))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, CorruptionConfig)
    hash(cfg)  # usable as a jit static argument
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.normalise = False
    expected = {"default.yaml": CorruptionConfig(), "none.yaml": clean_config()}
    if path.name in expected:
        assert cfg == expected[path.name]


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ({"warp": {"jitter_rms_max": 0.1}}, "jitter_rms_max"),
        ({"contaminaton": {"amp_max_rel": 0.1}}, "contaminaton"),
        ({"noise": {"poisson": "maybe"}}, "poisson"),
    ],
)
def test_unknown_key_or_bad_type_fails_naming_it(override, needle):
    with pytest.raises(Exception, match=needle):
        OmegaConf.merge(OmegaConf.structured(CorruptionConfig), OmegaConf.create(override))
