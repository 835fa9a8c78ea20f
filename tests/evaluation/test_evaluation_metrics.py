"""The evaluation protocol (stemjax.evaluation.metrics): matching, scores, confusion, RMSE in pm."""

import json

import numpy as np
import pytest

from stemjax.evaluation import evaluate, format_report, match_detections

PX = 0.2074  # Å/px
NAMES = ("none", "2Te", "SeTe", "SV", "DV", "2TeW", "SeW", "VW")
K1 = len(NAMES)


def image(points, classes, valid=None):
    d = {"points": np.asarray(points, float).reshape(-1, 2), "classes": np.asarray(classes)}
    if valid is not None:
        d["valid"] = np.asarray(valid, bool)
    return d


def run(preds, gts, **kw):
    return evaluate(preds, gts, K1, NAMES, PX, **kw)


@pytest.mark.parametrize("angstrom, matched", [(0.7, True), (0.9, False), (0.79, True)])
def test_matching_radius_is_0p8_angstrom(angstrom, matched):
    gt = np.array([[20.0, 30.0]])
    direction = np.array([0.6, 0.8])
    pred = gt + direction * angstrom / PX
    m = match_detections(pred, gt, 0.8 / PX)
    assert len(m.pred_index) == int(matched)
    if matched:
        np.testing.assert_allclose(m.distance * PX, [angstrom])
    res = run([image(pred, [3])], [image(gt, [3])])
    assert res.detection_recall == (1.0 if matched else 0.0)
    assert res.confusion[3][3] == int(matched)
    assert res.confusion[3][0] == int(not matched) and res.confusion[0][3] == int(not matched)


def greedy_nearest_first(pred, gt, max_d):
    """Reference greedy matcher: take the globally closest free pair until none is in range."""
    d = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
    pairs, used_p, used_g = [], set(), set()
    for flat in np.argsort(d, axis=None):
        i, j = np.unravel_index(flat, d.shape)
        if d[i, j] <= max_d and i not in used_p and j not in used_g:
            pairs.append((i, j, d[i, j]))
            used_p.add(i)
            used_g.add(j)
    return pairs


def test_hungarian_beats_greedy_on_number_of_matches():
    gt = np.array([[0.0, 0.0], [0.0, 1.6]])
    pred = np.array([[0.0, 0.7], [0.0, -0.95]])  # greedy takes pred0–gt0 (0.7), stranding pred1
    assert len(greedy_nearest_first(pred, gt, 1.0)) == 1
    m = match_detections(pred, gt, 1.0)
    assert sorted(zip(m.pred_index.tolist(), m.gt_index.tolist(), strict=True)) == [(0, 1), (1, 0)]
    np.testing.assert_allclose(sorted(m.distance), [0.9, 0.95])


def test_hungarian_beats_greedy_on_total_distance():
    gt = np.array([[0.0, 0.0], [0.0, 1.2]])
    pred = np.array([[0.0, 0.5], [0.0, -0.6]])
    greedy = greedy_nearest_first(pred, gt, 2.0)
    assert len(greedy) == 2 and sum(p[2] for p in greedy) == pytest.approx(2.3)
    m = match_detections(pred, gt, 2.0)
    assert len(m.distance) == 2 and m.distance.sum() == pytest.approx(1.3)


def test_matching_handles_empty_inputs():
    for pred, gt in [(np.zeros((0, 2)), np.ones((3, 2))), (np.ones((2, 2)), np.zeros((0, 2)))]:
        m = match_detections(pred, gt, 3.0)
        assert m.pred_index.shape == m.gt_index.shape == m.distance.shape == (0,)


def test_hand_computed_example():
    # image 1: 3 GT; pred 0 correct (0.5 px off), pred 1 matched but misclassified (0.5 px off),
    # pred 2 spurious, GT 2 missed. Pristine (class 0) and invalid GT rows are ignored.
    gt1 = image(
        [[10, 10], [20, 20], [30, 30], [40, 40], [50, 10]],
        [1, 2, 3, 0, 4],
        [True, True, True, True, False],
    )
    pr1 = image([[10.5, 10], [20, 20.5], [40, 5], [60, 60]], [1, 3, 2, 5], [1, 1, 1, 0])
    # image 2: one exact correct detection of class 2
    gt2, pr2 = image([[50, 50]], [2]), image([[50, 50]], [2])
    res = run([pr1, pr2], [gt1, gt2])

    expected = np.zeros((K1, K1), int)
    expected[1, 1] = 1  # correct
    expected[2, 3] = 1  # SeTe detected as SV
    expected[3, 0] = 1  # SV missed
    expected[0, 2] = 1  # spurious SeTe
    expected[2, 2] = 1  # image 2
    np.testing.assert_array_equal(res.confusion, expected)

    by_name = {c.name: c for c in res.per_class}
    c1, c2, c3 = by_name["2Te"], by_name["SeTe"], by_name["SV"]
    assert (c1.support, c1.predicted, c1.true_positives) == (1, 1, 1)
    assert (c1.precision, c1.recall, c1.f1) == (1.0, 1.0, 1.0)
    assert (c2.support, c2.predicted, c2.true_positives) == (2, 2, 1)
    assert (c2.precision, c2.recall, c2.f1) == (0.5, 0.5, 0.5)
    assert (c3.support, c3.predicted, c3.true_positives) == (1, 1, 0)
    assert (c3.precision, c3.recall, c3.f1) == (0.0, 0.0, 0.0)
    dv = by_name["DV"]  # no GT, no prediction: undefined, not zero
    assert (dv.support, dv.precision, dv.recall, dv.f1, dv.rmse_pm) == (0, None, None, None, None)

    assert (res.n_ground_truth, res.n_predicted, res.n_matched) == (4, 4, 3)
    # 2 class-correct; errors: 2 missed (SV, and SeTe called SV) + 2 false (that SV, spurious)
    assert (res.n_correct, res.n_errors) == (2, 4)
    assert res.recall == 0.5 and res.precision == 0.5 and res.f1 == 0.5
    assert res.detection_recall == 0.75 and res.detection_precision == 0.75
    assert res.macro_f1 == pytest.approx((1.0 + 0.5 + 0.0) / 3)
    pm = PX * 100
    assert res.rmse_pm == pytest.approx(np.sqrt((0.25 + 0.25 + 0.0) / 3) * pm)
    assert c1.rmse_pm == pytest.approx(0.5 * pm)
    assert c2.rmse_pm == pytest.approx(np.sqrt(0.25 / 2) * pm)  # GT-class pairs: 0.5 and 0 px
    assert c3.rmse_pm is None

    d = json.loads(json.dumps(res.to_dict(), allow_nan=False))
    assert d["confusion"] == expected.tolist() and d["per_class"][1]["name"] == "SeTe"
    assert res.scalars()["recall/SeTe"] == 0.5 and "recall/DV" not in res.scalars()
    report = format_report(res)
    assert "SeTe" in report and "missed" in report and "spurious" in report
    assert "0.500" in report


def test_rmse_in_picometres():
    gt = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 12.0]])
    offsets = np.array([[0.1, 0.0], [0.0, -0.1], [0.06, 0.08]])  # all 0.1 px long
    res = run([image(gt + offsets, [1, 4, 7])], [image(gt, [1, 4, 7])])
    assert res.rmse_pm == pytest.approx(2.074)
    for c in res.per_class:
        if c.support:
            assert c.rmse_pm == pytest.approx(2.074)


def test_perfect_predictions_score_one():
    rng = np.random.default_rng(0)
    gts, preds = [], []
    for _ in range(3):
        pts = rng.uniform(0, 100, (12, 2))
        cls = rng.integers(1, K1, 12)
        gts.append(image(pts, cls))
        preds.append(image(pts, cls))
    res = run(preds, gts)
    for k in ("recall", "precision", "f1", "detection_recall", "detection_precision", "macro_f1"):
        assert getattr(res, k) == 1.0, k
    assert res.rmse_pm == 0.0
    conf = np.asarray(res.confusion)
    assert np.all(conf[0] == 0) and np.all(conf[:, 0] == 0)
    assert np.trace(conf) == 36
    for c in res.per_class:
        if c.support:
            assert c.precision == c.recall == c.f1 == 1.0 and c.rmse_pm == 0.0


def test_batched_inputs_equal_lists_and_bad_inputs_raise():
    gt = {
        "points": np.array([[[5.0, 5.0], [9.0, 9.0]], [[3.0, 3.0], [0.0, 0.0]]]),
        "classes": np.array([[1, 0], [2, 2]]),
        "valid": np.array([[True, True], [True, False]]),
    }
    pred = {"points": gt["points"] + 0.2, "classes": np.array([[1, 3], [2, 0]])}
    batched = run(pred, gt)
    listed = run(
        [image(pred["points"][b], pred["classes"][b]) for b in range(2)],
        [image(gt["points"][b], gt["classes"][b], gt["valid"][b]) for b in range(2)],
    )
    assert batched.to_dict() == listed.to_dict()
    assert batched.n_ground_truth == 2 and batched.n_predicted == 3 and batched.recall == 1.0
    with pytest.raises(ValueError, match="ground-truth images"):
        run([image([[1, 1]], [1])], [])
    with pytest.raises(ValueError, match="out of range"):
        run([image([[1, 1]], [K1])], [image([[1, 1]], [1])])


def test_componentwise_matching_equals_dense_hungarian():
    """The KD-tree/component decomposition finds the dense assignment's optimum."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(7)
    for _ in range(5):
        gt = rng.uniform(0, 20, (60, 2))
        pred = np.concatenate([gt[:50] + rng.normal(0, 0.5, (50, 2)), rng.uniform(0, 20, (15, 2))])
        m = match_detections(pred, gt, 0.8)
        dist = np.linalg.norm(pred[:, None] - gt[None], axis=-1)
        big = 100.0 * (1 + 0.8)
        r, c = linear_sum_assignment(np.where(dist <= 0.8, dist, big))
        ok = dist[r, c] <= 0.8
        assert len(m.pred_index) == ok.sum()
        assert m.distance.sum() == pytest.approx(dist[r, c][ok].sum(), rel=1e-9)
        assert len(set(m.pred_index)) == len(m.pred_index) == len(set(m.gt_index))
        assert np.all(m.distance <= 0.8)


def test_restrict_to_region_scores_only_the_region():
    """Edge band 2 px of a 20 px image: GT inside kept; a detection of a defect outside the
    region is neutral (dropped) wherever it lies; a detection in the band matched to a defect
    inside counts; an unmatched detection counts only inside; invalid rows are dropped."""
    from stemjax.evaluation import restrict_to_region

    gt = {
        "points": np.array([[10.0, 10.0], [2.5, 10.0], [-0.5, 5.0], [1.0, 15.0], [12.0, 12.0]]),
        "classes": np.array([1, 2, 3, 1, 0]),  # the last is pristine: never a defect
    }
    pred = {
        "points": np.array([[10.2, 10.0], [1.9, 10.0], [0.0, 5.0], [1.2, 15.0], [5.0, 5.0],
                            [0.5, 8.0], [12.0, 12.0], [7.0, 7.0]]),
        "classes": np.array([1, 2, 3, 1, 2, 1, 2, 1]),
        "scores": np.arange(8.0),
        "valid": np.array([1, 1, 1, 1, 1, 1, 1, 0], bool),
    }  # fmt: skip
    p, g = restrict_to_region(pred, gt, 20, 2.0, 1.0)
    np.testing.assert_array_equal(g["points"], [[10.0, 10.0], [2.5, 10.0]])
    # kept: the two matched to inside defects (one in the band), the unmatched inside one, and
    # the unmatched one on the pristine site (a false detection)
    np.testing.assert_array_equal(p["scores"], [0.0, 1.0, 4.0, 6.0])
    assert set(p) == {"points", "classes", "scores"}
    # edge 0: the whole image, defects centred just outside it neutral
    p0, g0 = restrict_to_region(pred, gt, (20, 20), 0.0, 1.0)
    assert len(g0["points"]) == 3  # (−0.5, 5) is outside the image
    np.testing.assert_array_equal(p0["scores"], [0.0, 1.0, 3.0, 4.0, 5.0, 6.0])
