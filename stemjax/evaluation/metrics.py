"""The DESIGN.md evaluation protocol, host-side (NumPy + SciPy), shared by validation and predict.

Per image, detections are matched to ground-truth defects one-to-one (Hungarian, minimum total
distance) within `max_distance_angstrom` (0.8 Å); matching is class-agnostic, then the matched
pair's (GT class, predicted class) fills the confusion matrix. Class 0 ('none') is never a
defect: GT sites of class 0 (pristine) and invalid rows are ignored, as are predictions of
class 0 or with valid False.

Confusion matrix (K+1)×(K+1): rows = GT class, columns = predicted class, index 0 = no partner:
row 0 holds spurious detections (false positives) by predicted class, column 0 holds missed GT
defects by GT class; entry [0, 0] is always 0.

Dependency: `scipy` (`scipy.optimize.linear_sum_assignment`) must be a runtime dependency of
stemjax (it is pulled in by jax today, but should be listed in pyproject.toml).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
from scipy.optimize import linear_sum_assignment

PM_PER_ANGSTROM = 100.0


class Matching(NamedTuple):
    """One-to-one matches: pred_index (n,), gt_index (n,) int64, distance (n,) float64 in px."""

    pred_index: np.ndarray
    gt_index: np.ndarray
    distance: np.ndarray


def match_detections(pred_points, gt_points, max_distance_px: float) -> Matching:
    """Hungarian matching of pred (N, 2) to GT (M, 2) points (px), pairs at distance ≤ max only.

    Forbidden pairs get a cost larger than any sum of allowed distances, so the assignment first
    maximises the number of allowed matches, then minimises their total distance; forbidden
    pairs the solver still had to use are dropped afterwards. The problem is solved separately
    on each connected component of the allowed-pair graph (found with a KD-tree), which gives the
    same optimum and scales to whole micrographs (tens of thousands of defects).
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    pred = np.asarray(pred_points, np.float64).reshape(-1, 2)
    gt = np.asarray(gt_points, np.float64).reshape(-1, 2)
    empty = Matching(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64))
    if len(pred) == 0 or len(gt) == 0:
        return empty
    pairs = cKDTree(pred).sparse_distance_matrix(
        cKDTree(gt), float(max_distance_px), output_type="ndarray"
    )
    if len(pairs) == 0:
        return empty
    n = len(pred)
    graph = coo_matrix(
        (np.ones(len(pairs)), (pairs["i"], n + pairs["j"])), shape=(n + len(gt), n + len(gt))
    )
    _, label = connected_components(graph, directed=False)
    out_r, out_c = [], []
    for comp in np.unique(label[pairs["i"]]):
        pi = np.nonzero(label[:n] == comp)[0]
        gi = np.nonzero(label[n:] == comp)[0]
        if len(pi) == 1 and len(gi) == 1:
            out_r.append(pi)
            out_c.append(gi)
            continue
        dist = np.linalg.norm(pred[pi][:, None, :] - gt[gi][None, :, :], axis=-1)
        allowed = dist <= max_distance_px
        forbidden_cost = (min(len(pi), len(gi)) + 1) * (float(max_distance_px) + 1.0)
        rows, cols = linear_sum_assignment(np.where(allowed, dist, forbidden_cost))
        keep = allowed[rows, cols]
        out_r.append(pi[rows[keep]])
        out_c.append(gi[cols[keep]])
    rows = np.concatenate(out_r).astype(np.int64)
    cols = np.concatenate(out_c).astype(np.int64)
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    return Matching(rows, cols, np.linalg.norm(pred[rows] - gt[cols], axis=-1))


@dataclasses.dataclass(frozen=True)
class ClassMetrics:
    """Scores of one defect class. precision = TP / predicted as this class; recall (true-positive
    rate) = TP / support, TP = GT of this class matched AND classified as it; None where 0/0.
    rmse_pm: localisation RMSE (pm) of the matched pairs whose GT is this class (any predicted
    class), None without matches."""

    id: int
    name: str
    support: int
    predicted: int
    true_positives: int
    precision: float | None
    recall: float | None
    f1: float | None
    rmse_pm: float | None


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Protocol result; only plain Python types, so `to_dict()` is JSON-serialisable.

    recall / precision / f1: class-correct, over all defects (recall = the headline true-positive
    rate). detection_*: class-agnostic (a match counts whatever its class). macro_f1: mean F1 over
    classes with support. rmse_pm: over all matched pairs. confusion: see the module docstring.
    """

    class_names: list[str]
    confusion: list[list[int]]
    per_class: list[ClassMetrics]
    recall: float | None
    precision: float | None
    f1: float | None
    detection_recall: float | None
    detection_precision: float | None
    detection_f1: float | None
    macro_f1: float | None
    rmse_pm: float | None
    n_images: int
    n_ground_truth: int
    n_predicted: int
    n_matched: int
    pixel_size_angstrom: float
    max_distance_angstrom: float

    @property
    def n_correct(self) -> int:
        """Class-correct matches (true positives over all classes)."""
        return sum(c.true_positives for c in self.per_class)

    @property
    def n_errors(self) -> int:
        """Class-correct errors: missed defects plus false detections (a wrong class is both)."""
        return (self.n_ground_truth - self.n_correct) + (self.n_predicted - self.n_correct)

    def to_dict(self) -> dict:
        """Nested dict of plain types (JSON-serialisable, None for undefined ratios)."""
        return dataclasses.asdict(self)

    def scalars(self) -> dict[str, float]:
        """Flat {metric: value} for logging ('recall', 'f1/SV', ...); undefined values omitted."""
        out = {
            k: getattr(self, k)
            for k in (
                "recall",
                "precision",
                "f1",
                "detection_recall",
                "detection_precision",
                "detection_f1",
                "macro_f1",
                "rmse_pm",
            )
        }
        for c in self.per_class:
            for k in ("precision", "recall", "f1", "rmse_pm"):
                out[f"{k}/{c.name}"] = getattr(c, k)
        return {k: float(v) for k, v in out.items() if v is not None}


def _ratio(num, den) -> float | None:
    return float(num) / float(den) if den else None


def _f1(p, r) -> float | None:
    if p is None or r is None:
        return None
    return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def _rmse(d2: list[float]) -> float | None:
    return float(np.sqrt(np.mean(d2))) if d2 else None


def _field(item, name: str, default=None):
    if isinstance(item, Mapping):
        return item.get(name, default)
    return getattr(item, name, default)


def _images(items, what: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-image (points (n, 2), classes (n,)) with invalid rows and class 0 removed.

    `items`: a sequence of per-image dicts/objects with points, classes and optional valid, or
    one batched dict/object (e.g. `Detections`, `Batch`) whose points are (B, N, 2), or a single
    unbatched image.
    """
    if not isinstance(items, Sequence) and _field(items, "points") is not None:
        points = np.asarray(_field(items, "points"))
        if points.ndim < 3:
            items = [items]  # one image
        else:
            fields = {n: _field(items, n) for n in ("points", "classes", "valid")}
            items = [
                {n: (None if v is None else np.asarray(v)[b]) for n, v in fields.items()}
                for b in range(points.shape[0])
            ]
    out = []
    for i, item in enumerate(items):
        points = np.asarray(_field(item, "points"), np.float64).reshape(-1, 2)
        classes = np.asarray(_field(item, "classes"), np.int64).reshape(-1)
        valid = _field(item, "valid")
        valid = np.ones(len(classes), bool) if valid is None else np.asarray(valid, bool)
        if not len(points) == len(classes) == len(valid):
            raise ValueError(
                f"{what}[{i}]: points, classes and valid lengths differ "
                f"({len(points)}, {len(classes)}, {len(valid)})"
            )
        keep = valid & (classes > 0)
        out.append((points[keep], classes[keep]))
    return out


def restrict_to_region(pred, gt, size_px, edge_px: float, max_distance_px: float):
    """One image scored only inside the region [edge, size − 1 − edge]² px: (pred, gt) dicts.

    pred: dict of points (n, 2) px and any per-detection arrays (rows with `valid` False are
    dropped).
    gt: points / classes of all labelled sites, inside the image or not (a `Batch` keeps the
    sites outside with valid False). GT defects inside the region are kept. A detection matched
    (within `max_distance_px`) to a defect outside the region is dropped, neither right nor
    wrong; one matched to a defect inside is kept wherever it lies; an unmatched one is kept
    only inside the region. With edge 0 this is the whole image with partly visible defects
    (centred just outside, which the network is trained to mark) neutral; with predict's
    `EDGE_A` it is the interior that `predict` reports. size_px: int or (H, W).
    """
    h, w = (size_px, size_px) if np.ndim(size_px) == 0 else size_px
    pred = {k: np.asarray(v) for k, v in pred.items()}
    if "valid" in pred:
        ok = pred.pop("valid").astype(bool)
        pred = {k: v[ok] for k, v in pred.items()}
    g_cls = np.asarray(_field(gt, "classes"))
    g_pts = np.asarray(_field(gt, "points")).reshape(-1, 2)[g_cls > 0]
    g_cls = g_cls[g_cls > 0]
    p_pts = pred["points"].reshape(-1, 2)

    def inside(q):
        return (q[:, 0] >= edge_px) & (q[:, 0] <= h - 1 - edge_px) & (
            q[:, 1] >= edge_px) & (q[:, 1] <= w - 1 - edge_px)  # fmt: skip

    g_in, p_in = inside(g_pts), inside(p_pts)
    m = match_detections(p_pts, g_pts, max_distance_px)
    partner = np.full(len(p_pts), -1)
    partner[m.pred_index] = m.gt_index
    keep = np.where(partner >= 0, g_in[np.maximum(partner, 0)], p_in)
    return {k: v[keep] for k, v in pred.items()}, {"points": g_pts[g_in], "classes": g_cls[g_in]}


def evaluate(
    predictions,
    ground_truth,
    num_classes: int,
    class_names: Sequence[str] | None,
    pixel_size_angstrom: float,
    max_distance_angstrom: float = 0.8,
) -> EvaluationResult:
    """Score detections against ground truth over a set of images (the DESIGN.md protocol).

    predictions / ground_truth: per image, points (n, 2) (row, col) in px, classes (n,) registry
    ids, optional valid (n,) — as dicts or objects (e.g. `detections_to_numpy` output, a batched
    `Detections`, a `trainingdata.Batch`). num_classes: K + 1 including 'none' (id 0).
    class_names: names by id (e.g. `registry.names`). pixel_size_angstrom: Å/px of the points.
    max_distance_angstrom: matching radius (Å).
    """
    preds = _images(predictions, "predictions")
    gts = _images(ground_truth, "ground_truth")
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} prediction images but {len(gts)} ground-truth images")
    names = [str(i) for i in range(num_classes)] if class_names is None else list(class_names)
    if len(names) != num_classes:
        raise ValueError(f"class_names has {len(names)} entries, num_classes is {num_classes}")
    if pixel_size_angstrom <= 0:
        raise ValueError(f"pixel_size_angstrom must be positive, got {pixel_size_angstrom}")
    for what, images in (("predictions", preds), ("ground_truth", gts)):
        for _, c in images:
            if c.size and c.max() >= num_classes:
                raise ValueError(f"{what}: class id {c.max()} out of range 0..{num_classes - 1}")

    pm_per_px = float(pixel_size_angstrom) * PM_PER_ANGSTROM
    max_px = float(max_distance_angstrom) / float(pixel_size_angstrom)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    d2_by_class: list[list[float]] = [[] for _ in range(num_classes)]
    n_matched = 0
    for (p_pts, p_cls), (g_pts, g_cls) in zip(preds, gts, strict=True):
        m = match_detections(p_pts, g_pts, max_px)
        np.add.at(confusion, (g_cls[m.gt_index], p_cls[m.pred_index]), 1)
        missed = np.setdiff1d(np.arange(len(g_cls)), m.gt_index)
        spurious = np.setdiff1d(np.arange(len(p_cls)), m.pred_index)
        np.add.at(confusion, (g_cls[missed], 0), 1)
        np.add.at(confusion, (0, p_cls[spurious]), 1)
        for g, d in zip(g_cls[m.gt_index], m.distance, strict=True):
            d2_by_class[g].append(float(d * pm_per_px) ** 2)
        n_matched += len(m.distance)

    per_class = []
    for k in range(1, num_classes):
        tp, support, predicted = (
            int(confusion[k, k]),
            int(confusion[k].sum()),
            int(confusion[:, k].sum()),
        )
        p, r = _ratio(tp, predicted), _ratio(tp, support)
        per_class.append(
            ClassMetrics(
                k, names[k], support, predicted, tp, p, r, _f1(p, r), _rmse(d2_by_class[k])
            )
        )
    n_gt, n_pred = int(confusion[1:].sum()), int(confusion[:, 1:].sum())
    tp_all = int(np.trace(confusion[1:, 1:]))
    recall, precision = _ratio(tp_all, n_gt), _ratio(tp_all, n_pred)
    det_recall, det_precision = _ratio(n_matched, n_gt), _ratio(n_matched, n_pred)
    f1s = [c.f1 for c in per_class if c.support > 0 and c.f1 is not None]
    return EvaluationResult(
        class_names=names,
        confusion=confusion.tolist(),
        per_class=per_class,
        recall=recall,
        precision=precision,
        f1=_f1(precision, recall),
        detection_recall=det_recall,
        detection_precision=det_precision,
        detection_f1=_f1(det_precision, det_recall),
        macro_f1=float(np.mean(f1s)) if f1s else None,
        rmse_pm=_rmse([d for ds in d2_by_class for d in ds]),
        n_images=len(preds),
        n_ground_truth=n_gt,
        n_predicted=n_pred,
        n_matched=n_matched,
        pixel_size_angstrom=float(pixel_size_angstrom),
        max_distance_angstrom=float(max_distance_angstrom),
    )


def _fmt(x, spec: str = ".3f") -> str:
    return "—" if x is None else format(x, spec)


def format_report(result: EvaluationResult) -> str:
    """Plain-text table: per-class and overall scores, then the confusion matrix."""
    r = result
    max_px = r.max_distance_angstrom / r.pixel_size_angstrom
    w = max(12, *(len(n) + 1 for n in r.class_names))
    lines = [
        f"{r.n_images} images, {r.n_ground_truth} GT defects, {r.n_predicted} detections, "
        f"{r.n_matched} matched within {r.max_distance_angstrom:.2f} Å "
        f"({max_px:.2f} px at {r.pixel_size_angstrom:.4f} Å/px)",
        f"{'class':<{w}}{'support':>8}{'pred':>7}{'TP':>7}{'precision':>11}{'recall':>8}"
        f"{'F1':>7}{'RMSE/pm':>9}",
    ]
    for c in r.per_class:
        lines.append(
            f"{c.name:<{w}}{c.support:>8}{c.predicted:>7}{c.true_positives:>7}"
            f"{_fmt(c.precision):>11}{_fmt(c.recall):>8}{_fmt(c.f1):>7}{_fmt(c.rmse_pm, '.2f'):>9}"
        )
    lines += [
        f"{'all (class)':<{w}}{r.n_ground_truth:>8}{r.n_predicted:>7}{r.n_correct:>7}"
        f"{_fmt(r.precision):>11}{_fmt(r.recall):>8}{_fmt(r.f1):>7}{_fmt(r.rmse_pm, '.2f'):>9}",
        f"{'all (detect)':<{w}}{r.n_ground_truth:>8}{r.n_predicted:>7}{r.n_matched:>7}"
        f"{_fmt(r.detection_precision):>11}{_fmt(r.detection_recall):>8}"
        f"{_fmt(r.detection_f1):>7}",
        f"macro F1 {_fmt(r.macro_f1)}",
        "",
        "confusion (rows: ground truth, 'spurious' = no GT; columns: predicted, 'missed' = none)",
    ]
    rows = ["spurious", *r.class_names[1:]]
    cols = ["missed", *r.class_names[1:]]
    cw = max(8, *(len(n) + 1 for n in cols))
    lines.append(" " * w + "".join(f"{n:>{cw}}" for n in cols))
    for name, row in zip(rows, r.confusion, strict=True):
        lines.append(f"{name:<{w}}" + "".join(f"{v:>{cw}}" for v in row))
    return "\n".join(lines)
