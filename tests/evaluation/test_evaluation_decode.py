"""Logits → defect list (stemjax.evaluation.decode): positions, classes, suppression, jit/vmap."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.evaluation import Detections, decode_defects, detections_to_numpy, evaluate

NUM_CLASSES = 8  # wse2te: none + 7 defect classes


def blob_logits(shape, blobs, num_classes=NUM_CLASSES, sigma=1.0):
    """(H, W, C) logits whose class probabilities are Gaussian blobs (row, col, class, peak)."""
    r, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    p = np.zeros((*shape, num_classes))
    for row, col, k, peak in blobs:
        p[..., k] += peak * np.exp(-((r - row) ** 2 + (c - col) ** 2) / (2 * sigma**2))
    p[..., 0] = 1.0 - p[..., 1:].sum(-1)
    return jnp.asarray(np.log(np.clip(p, 1e-6, None)), jnp.float32)


# sub-pixel offsets spread over the pixel, one per defect class
BLOBS = [
    (6.0, 7.0, 1, 0.9),
    (8.37, 21.81, 2, 0.9),
    (9.5, 36.5, 3, 0.85),
    (22.12, 9.46, 4, 0.9),
    (24.71, 24.23, 5, 0.8),
    (21.9, 39.08, 6, 0.9),
    (35.45, 14.6, 7, 0.95),
    (36.02, 33.33, 1, 0.7),
]


def test_decode_recovers_subpixel_positions_and_classes():
    det = decode_defects(blob_logits((44, 48), BLOBS), threshold=0.5, max_detections=32)
    out = detections_to_numpy(det)
    assert len(out["points"]) == len(BLOBS)
    truth = np.array([b[:2] for b in BLOBS])
    dist = np.linalg.norm(out["points"][:, None] - truth[None], axis=-1)
    nearest = dist.argmin(1)
    assert sorted(nearest) == list(range(len(BLOBS)))  # one detection per blob
    assert dist.min(1).max() < 0.2, dist.min(1)  # plain 3×3 centroid: 0.23 px here
    np.testing.assert_array_equal(out["classes"], [BLOBS[i][2] for i in nearest])
    # score = p_def at the peak pixel ≈ blob peak; sorted best first
    assert np.all(out["scores"] > 0.5) and np.all(np.diff(out["scores"]) <= 0)
    assert out["classes"].dtype == np.int32


def test_class_is_argmax_of_summed_neighbourhood_probabilities():
    # class 3 has the single highest pixel, class 5 dominates the 3×3 sum around it
    logits = np.full((9, 9, 6), -10.0, np.float32)
    logits[..., 0] = 0.0
    logits[4, 4, 3] = 3.0
    logits[3:6, 3:6, 5] = 2.5
    logits[4, 4, 5] = 1.0
    out = detections_to_numpy(decode_defects(jnp.asarray(logits), max_detections=4))
    assert len(out["classes"]) == 1
    assert out["classes"][0] == 5
    np.testing.assert_allclose(out["points"][0], [4.0, 4.0], atol=1e-5)
    # class_probs: the same 3×3 sums over the defect classes, normalised
    p = np.asarray(jax.nn.softmax(jnp.asarray(logits), -1))[3:6, 3:6, 1:].sum((0, 1))
    np.testing.assert_allclose(out["class_probs"][0], p / p.sum(), rtol=1e-5)
    assert np.argmax(out["class_probs"][0]) + 1 == 5 and out["class_probs"][0][2] > 0.05


def test_blobs_closer_than_min_distance_give_one_detection():
    blobs = [(20.0, 20.0, 2, 0.9), (20.0, 23.0, 4, 0.8)]  # 3 px apart, both clear peaks
    logits = blob_logits((40, 40), blobs, sigma=0.8)
    one = detections_to_numpy(decode_defects(logits, min_distance_px=3, max_detections=8))
    assert len(one["points"]) == 1
    assert one["classes"][0] == 2 and abs(one["points"][0, 1] - 20.0) < 0.3
    both = detections_to_numpy(decode_defects(logits, min_distance_px=1, max_detections=8))
    assert len(both["points"]) == 2


def test_saturated_plateau_gives_one_detection():
    logits = np.zeros((16, 16, 3), np.float32)
    logits[..., 0] = 10.0
    logits[6:8, 9:11, 1] = 60.0  # 2×2 plateau with p_def == 1 to float precision
    out = detections_to_numpy(decode_defects(jnp.asarray(logits), max_detections=8))
    assert len(out["points"]) == 1
    np.testing.assert_allclose(out["points"][0], [6.5, 9.5], atol=1e-4)


def test_nothing_above_threshold_gives_no_valid_detection():
    weak = blob_logits((24, 24), [(12.0, 12.0, 3, 0.45)])  # p_def peaks at 0.45
    det = decode_defects(weak, threshold=0.5, max_detections=16)
    assert not np.any(det.valid)
    assert np.all(det.scores == 0) and np.all(det.classes == 0) and np.all(det.points == 0)
    assert det.class_probs.shape == (16, NUM_CLASSES - 1) and np.all(det.class_probs == 0)
    assert detections_to_numpy(det)["points"].shape == (0, 2)
    assert np.sum(decode_defects(weak, threshold=0.4, max_detections=16).valid) == 1


def test_max_detections_keeps_the_highest_scores():
    logits = blob_logits((44, 48), BLOBS)
    full = detections_to_numpy(decode_defects(logits, max_detections=32))
    top = detections_to_numpy(decode_defects(logits, max_detections=3))
    np.testing.assert_array_equal(top["scores"], full["scores"][:3])
    np.testing.assert_array_equal(top["points"], full["points"][:3])


def test_jit_vmap_fixed_shapes_and_batch_equivalence():
    batch = jnp.stack(
        [
            blob_logits((24, 28), BLOBS[:1]),
            blob_logits((24, 28), [(12.3, 14.6, 5, 0.9), (4.0, 4.0, 2, 0.9)]),
            blob_logits((24, 28), []),
        ]
    )
    n = 16
    direct = decode_defects(batch, max_detections=n)
    assert isinstance(direct, Detections)
    assert direct.points.shape == (3, n, 2) and direct.points.dtype == jnp.float32
    assert direct.classes.shape == (3, n) and direct.classes.dtype == jnp.int32
    assert direct.scores.shape == (3, n) and direct.valid.shape == (3, n)
    np.testing.assert_array_equal(np.sum(direct.valid, 1), [1, 2, 0])
    assert direct.class_probs.shape == (3, n, NUM_CLASSES - 1)
    np.testing.assert_allclose(np.sum(direct.class_probs, -1), direct.valid, atol=1e-5)

    vmapped = jax.vmap(functools.partial(decode_defects, max_detections=n))(batch)
    traced = jax.jit(lambda x, t: decode_defects(x, threshold=t, max_detections=n))(batch, 0.5)
    for other in (vmapped, traced):
        for a, b in zip(jax.tree.leaves(direct), jax.tree.leaves(other), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    listed = detections_to_numpy(direct)
    assert [len(d["classes"]) for d in listed] == [1, 2, 0]
    assert listed[1]["class_probs"].shape == (2, NUM_CLASSES - 1)
    found = listed[1]["points"][np.argsort(listed[1]["points"][:, 0])]
    np.testing.assert_allclose(found, [[4.0, 4.0], [12.3, 14.6]], atol=0.3)


def test_more_detections_than_pixels_is_padded():
    logits = blob_logits((4, 4), [(1.6, 2.2, 1, 0.9)])
    det = decode_defects(logits, min_distance_px=0, max_detections=40)
    assert det.points.shape == (40, 2)
    assert 1 <= int(det.valid.sum()) <= 16 and not np.any(det.valid[16:])


def test_decode_then_evaluate_end_to_end():
    det = decode_defects(blob_logits((44, 48), BLOBS), max_detections=32)
    gt = {"points": np.array([b[:2] for b in BLOBS]), "classes": np.array([b[2] for b in BLOBS])}
    res = evaluate([detections_to_numpy(det)], [gt], NUM_CLASSES, None, 0.2074)
    assert res.recall == 1.0 and res.precision == 1.0
    assert 0 < res.rmse_pm < 0.3 * 20.74  # pm
    # the device struct itself (padded rows masked by valid) scores the same
    direct = evaluate(det, gt, NUM_CLASSES, None, 0.2074)
    assert direct.to_dict() == res.to_dict()
