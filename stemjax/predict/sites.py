"""Lattice sites (all atomic columns) of a micrograph, for per-site concentrations.

Classical column finding on the normalised image at the model's pixel size: Gaussian smoothing
(σ = `smooth_A`), local maxima within `min_separation_A`, kept if brighter than the local
mean by `min_contrast` robust standard deviations, then non-maximum suppression among peaks.
Each column is assigned to a sublattice from the honeycomb geometry of its neighbours (not its
brightness: W and Se2 columns are about equally bright), the two halves named by the detected
defects' classes (see `assign_sublattices`). Columns emptied by a defect (vacancies) have no peak: a
detected defect with no column within `snap_A` adds its own site on its class's sublattice.
A defect's own site sublattice, from its named neighbour columns (`site_sublattices`), restricts
its class to that sublattice's classes (`restrict_to_sublattice`).
The same bond directions give the micrograph's lattice orientation (`lattice_orientation`),
which puts class averages of differently rotated micrographs in one frame.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from stemjax.specimen.materials import SUBLATTICES

log = logging.getLogger(__name__)


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample (maximises the between-class variance)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[1:] + edges[:-1])
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def find_columns(
    image: np.ndarray,
    pixel_size_A: float,
    *,
    smooth_A: float = 0.35,
    min_separation_A: float = 1.3,
    min_contrast: float = 0.5,
    background_A: float = 6.0,
):
    """Atomic columns of a normalised image (H, W) at `pixel_size_A` (Å/px).

    smooth_A: Gaussian σ (Å) before peak finding. min_separation_A: peaks closer than this (Å)
    are one column (below the 1.9 Å projected M–X2 distance). min_contrast: a peak must exceed
    the local mean (square window `background_A`, Å) by this many robust σ of the smoothed image.
    Returns (points (N, 2) (row, col) px, peak values (N,) of the smoothed image).
    """
    img = ndimage.gaussian_filter(np.asarray(image, np.float32), smooth_A / pixel_size_A)
    peaks = img == ndimage.maximum_filter(img, size=3, mode="nearest")
    window = max(3, int(round(background_A / pixel_size_A)) | 1)
    background = ndimage.uniform_filter(img, size=window, mode="nearest")
    q25, q75 = np.percentile(img, [25, 75])
    spread = max((q75 - q25) / 1.349, 1e-6)
    peaks &= img > background + min_contrast * spread
    rows, cols = np.nonzero(peaks)
    # greedy non-maximum suppression among the peaks themselves (brightest first): a dim column
    # on the slope of a bright neighbour stays a peak, unlike with a wide maximum filter
    values = img[rows, cols]
    order = np.argsort(-values, kind="stable")
    rows, cols = rows[order], cols[order]
    pairs = cKDTree(np.stack([rows, cols], 1)).query_pairs(
        min_separation_A / pixel_size_A, output_type="ndarray"
    )
    keep = np.ones(len(rows), bool)
    if len(pairs):
        pairs.sort(axis=1)  # (brighter index, dimmer index) in the sorted order
        pairs = pairs[np.argsort(pairs[:, 0], kind="stable")]
        for i, j in pairs:
            if keep[i]:
                keep[j] = False
    rows, cols = rows[keep], cols[keep]
    # sub-pixel: 3×3 centroid of the smoothed image above its local minimum
    pts = np.stack([rows, cols], 1).astype(np.float32)
    h, w = img.shape
    inner = (rows > 0) & (rows < h - 1) & (cols > 0) & (cols < w - 1)
    r, c = rows[inner], cols[inner]
    patch = np.stack([img[r + dr, c + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)], 1)
    patch = patch - patch.min(1, keepdims=True)
    total = np.maximum(patch.sum(1), 1e-12)
    dr = np.repeat([-1.0, 0.0, 1.0], 3)
    dc = np.tile([-1.0, 0.0, 1.0], 3)
    pts[inner, 0] += (patch * dr).sum(1) / total
    pts[inner, 1] += (patch * dc).sum(1) / total
    return pts, img[rows, cols]


BOND_A = (1.4, 2.5)
"""Range (Å) of projected metal–chalcogen bond lengths (1.9 Å in WSe2, 1.8–2.1 Å in the 2H
MX2 family); same-sublattice neighbours sit a ≈ 3.2–3.5 Å apart, outside it."""


def _bond_phases(pts: np.ndarray, pixel_size_A: float, bond_A=BOND_A):
    """Per column: z = Σ over neighbours within `bond_A` (Å) of exp(3iφ), φ the angle of the
    column → neighbour vector in the image (atan2(Δrow, Δcol): from +x towards +y, y down),
    and the number of those neighbours."""
    lo, hi = bond_A[0] / pixel_size_A, bond_A[1] / pixel_size_A
    pairs = cKDTree(pts).query_pairs(hi, output_type="ndarray")
    d = pts[pairs[:, 1]] - pts[pairs[:, 0]]
    length = np.hypot(d[:, 0], d[:, 1])
    pairs, d = pairs[length >= lo], d[length >= lo]
    phase = np.exp(3j * np.arctan2(d[:, 0], d[:, 1]))
    z = np.zeros(len(pts), complex)
    np.add.at(z, pairs[:, 0], phase)
    np.add.at(z, pairs[:, 1], -phase)  # the reverse vector: φ + 180° → e^{3iφ} · (−1)
    count = np.bincount(pairs.ravel(), minlength=len(pts))
    return z, count


def _bond_neighbour_votes(points_px, column_points_px, column_flags, pixel_size_A, bond_A=BOND_A):
    """Per point: (flagged, unflagged) counts of the columns one bond (`bond_A`, Å) away.

    The nearest neighbours of a honeycomb site all sit on the other sublattice, whether or not
    the site holds a column itself (vacancies do not); its own column, closer than bond_A[0],
    is not counted.
    """
    pts = np.asarray(points_px, np.float64).reshape(-1, 2)
    flags = np.asarray(column_flags, bool)
    if len(pts) == 0 or len(flags) == 0:
        return np.zeros(len(pts), int), np.zeros(len(pts), int)
    lo, hi = bond_A[0] / pixel_size_A, bond_A[1] / pixel_size_A
    tree = cKDTree(np.asarray(column_points_px, np.float64).reshape(-1, 2))
    # a site has 3 neighbours one bond away and its own column; 8 leaves room for spurious peaks
    dist, idx = tree.query(pts, k=min(8, tree.n), distance_upper_bound=hi)
    dist, idx = dist.reshape(len(pts), -1), idx.reshape(len(pts), -1)
    bond = (dist >= lo) & np.isfinite(dist)
    flagged = flags[np.minimum(idx, tree.n - 1)]
    return np.sum(bond & flagged, 1), np.sum(bond & ~flagged, 1)


MIN_LATTICE_COHERENCE = 0.5
"""Below this bond coherence `lattice_orientation` reports no angle (NaN): single-crystal
lattices give ≥ 0.96 (the 72 micrographs of benchmarks/predict_million.py), columns found in
pure noise ≈ 0.3, random points < 0.2."""


def lattice_orientation(
    points_px: np.ndarray,
    sublattice: np.ndarray,
    pixel_size_A: float,
    bond_A: tuple[float, float] = BOND_A,
    min_coherence: float = MIN_LATTICE_COHERENCE,
) -> tuple[float, float]:
    """In-plane orientation of a 2H honeycomb from its columns and their sublattices.

    Returns (angle_rad, coherence). angle_rad in [0, 2π/3): direction of the metal → chalcogen
    bonds in the image (from +x towards +y, y down; the other two bonds at +120°, +240°), so
    rotating a crop by it puts every micrograph's lattice in one frame (the projected motif is
    three-fold, so the angle is defined modulo 120°, not 60° as from Bragg spots alone).
    coherence: |mean bond phasor| in [0, 1]: ≈ 1 for a single-crystal lattice with correct
    sublattice names, near 0 for no lattice, mixed grains or swapped names; below
    `min_coherence` the angle is NaN (no orientation to trust). Columns on neither of
    `SUBLATTICES` are ignored.
    """
    pts = np.asarray(points_px, np.float64).reshape(-1, 2)
    sign = np.select(
        [np.asarray(sublattice) == SUBLATTICES[0], np.asarray(sublattice) == SUBLATTICES[1]],
        [1.0, -1.0],
        0.0,
    )
    if len(pts) < 2 or not sign.any():
        return float("nan"), 0.0
    z, count = _bond_phases(pts, pixel_size_A, bond_A)
    total = np.sum(sign * z)  # a chalcogen → metal bond: −e^{3i(φ+π)} = e^{3iφ}
    n = np.sum(np.abs(sign) * count)
    if n == 0:
        return float("nan"), 0.0
    coherence = float(abs(total) / n)
    if coherence < min_coherence:
        return float("nan"), coherence
    return float((np.angle(total) / 3) % (2 * np.pi / 3)), coherence


def assign_sublattices(
    points_px: np.ndarray,
    values: np.ndarray,
    pixel_size_A: float,
    brightness: dict[str, float],
    defect_points_px: np.ndarray | None = None,
    defect_sublattices: np.ndarray | None = None,
    bond_A: tuple[float, float] = BOND_A,
) -> np.ndarray:
    """Sublattice name per column, from the lattice geometry.

    In projection, the 2H lattice is a honeycomb: the three nearest neighbours (1.9 Å) of a metal
    column point along θ0 + {0°, 120°, 240°}, those of a chalcogen column along θ0 + {60°, 180°,
    300°}. So z = Σ_neighbours exp(3iφ) is +A·e^{3iθ0} on one sublattice and −A·e^{3iθ0} on the
    other: its sign against the field's common phase (from Σ z², sign-free) splits the sites,
    whatever their brightness (W and Se2 columns are about equally bright at 80 kV, 60–200 mrad).
    Which half is which: the majority vote of the detected defects (each class knows its
    sublattice; each defect's half is that of its own site, the other one of its bond
    neighbours', since a vacancy has no column), or, without defects, the brighter half is the
    sublattice with the larger
    expected `brightness` (Σ Z^1.7). Columns without neighbours in `bond_A` (Å) fall back to the
    brightness threshold. Assumes one lattice orientation per image (single crystal).
    """
    pts = np.asarray(points_px, np.float64).reshape(-1, 2)
    values = np.asarray(values, np.float64)
    names = sorted(brightness, key=brightness.get)  # (dim, bright)
    if len(pts) < 2:
        return np.full(len(pts), names[1], dtype=object)
    z, _ = _bond_phases(pts, pixel_size_A, bond_A)
    g = np.sqrt(np.sum(z**2))
    score = np.real(z * np.conj(g / max(abs(g), 1e-12)))
    side = score > 0
    undecided = np.abs(score) < 1e-6
    if undecided.any():
        cut = _otsu(values) if len(values) > 2 else float(np.median(values))
        bright_side = values[~undecided & side].mean() > values[~undecided & ~side].mean()
        side[undecided] = (values[undecided] > cut) == bright_side
    # which side is which sublattice
    vote = 0.0
    if defect_points_px is not None and len(defect_points_px):
        # a defect's side from its bond neighbours (a vacancy has no column of its own: the
        # nearest column would be a neighbour, on the other side)
        n_side, n_other = _bond_neighbour_votes(defect_points_px, pts, side, pixel_size_A, bond_A)
        on_side = np.sign(n_other - n_side)  # +1: on `side`, −1: off it, 0: unknown
        subs = np.asarray(defect_sublattices, object)
        vote = float(np.sum(np.where(subs == names[1], 1, -1) * on_side))
    if vote == 0.0:  # no defects (or a tie): brightness
        vote = 1.0 if values[side].mean() >= values[~side].mean() else -1.0
    true_name, false_name = (names[1], names[0]) if vote > 0 else (names[0], names[1])
    return np.where(side, true_name, false_name).astype(object)


def complete_sites(site_pts, site_sub, defect_pts, defect_sub, snap_px: float):
    """Add a site for each defect with no column within `snap_px` (vacancies have no peak)."""
    if len(defect_pts) == 0:
        return site_pts, site_sub
    if len(site_pts):
        dist, _ = cKDTree(site_pts).query(defect_pts, k=1)
        missing = dist > snap_px
    else:
        missing = np.ones(len(defect_pts), bool)
    pts = np.concatenate([site_pts, defect_pts[missing]]).astype(np.float32)
    sub = np.concatenate([site_sub, np.asarray(defect_sub, object)[missing]])
    return pts, sub


def site_sublattices(
    points_px: np.ndarray,
    column_points_px: np.ndarray,
    column_sublattices: np.ndarray,
    pixel_size_A: float,
    bond_A: tuple[float, float] = BOND_A,
    min_neighbours: int = 2,
) -> np.ndarray:
    """Sublattice of the lattice site at each point, from its named neighbour columns.

    The nearest neighbours of a site, one bond (`bond_A`, Å) away, all sit on the other
    sublattice, whether or not the site itself holds a column (vacancies do not). A point's
    sublattice is the other one of its neighbours' when at least `min_neighbours` of them are
    found and they all agree (its own column, closer than bond_A[0], is not counted); None
    otherwise (one neighbour or a split vote: a spurious or misnamed column is likelier).
    """
    pts = np.asarray(points_px, np.float64).reshape(-1, 2)
    out = np.full(len(pts), None, dtype=object)
    is_metal = np.asarray(column_sublattices, object) == SUBLATTICES[0]
    metal, chalcogen = _bond_neighbour_votes(pts, column_points_px, is_metal, pixel_size_A, bond_A)
    # unanimous neighbours name the other sublattice of the two
    out[(metal >= min_neighbours) & (chalcogen == 0)] = SUBLATTICES[1]
    out[(chalcogen >= min_neighbours) & (metal == 0)] = SUBLATTICES[0]
    return out


def restrict_to_sublattice(
    classes: np.ndarray, class_probs: np.ndarray, sublattice: np.ndarray, registry
) -> np.ndarray:
    """Class ids made consistent with the geometric sublattice of each detection.

    classes: (N,) registry ids. class_probs: (N, K) probabilities of ids 1..K. sublattice: (N,)
    geometric sublattice name per detection, None where unknown (kept as is). registry: the
    `DefectRegistry` (which classes sit on which sublattice). Each detection whose class lies on
    the other sublattice gets its most probable class of its own site's sublattice (a defect on
    a metal site cannot be a chalcogen-site defect).
    """
    classes = np.array(classes)
    if len(classes) == 0:
        return classes
    probs = np.asarray(class_probs).reshape(len(classes), -1)
    sub = np.asarray(sublattice, object)
    for name in registry.sublattices:
        allowed = np.asarray(registry.ids_on(name), int)
        rows = (sub == name) & ~np.isin(classes, allowed)
        if rows.any() and len(allowed):
            classes[rows] = allowed[np.argmax(probs[rows][:, allowed - 1], axis=1)]
    return classes


def columns_and_classes(
    image: np.ndarray,
    pixel_size_A: float,
    brightness: dict[str, float],
    points_px: np.ndarray,
    classes: np.ndarray,
    class_probs: np.ndarray,
    registry,
    consistent: bool = True,
):
    """The lattice columns of a normalised image, their sublattices, and the defects' classes.

    Columns: `find_columns`, named by `assign_sublattices` (with the detections' classes).
    Classes: with `consistent`, restricted to the sublattice of each defect's site
    (`site_sublattices`, `restrict_to_sublattice`); otherwise returned as given. points_px
    (N, 2) (row, col), classes (N,) ids of `registry` (a `DefectRegistry`), class_probs (N, K)
    of ids 1..K. Returns (column points (M, 2) px, column sublattices (M,), classes (N,)).
    """
    col_pts, col_vals = find_columns(image, pixel_size_A)
    col_sub = assign_sublattices(
        col_pts, col_vals, pixel_size_A, brightness, points_px,
        registry.sublattice_names()[classes],
    )  # fmt: skip
    if consistent:
        site_sub = site_sublattices(points_px, col_pts, col_sub, pixel_size_A)
        classes = restrict_to_sublattice(classes, class_probs, site_sub, registry)
    return col_pts, col_sub, classes
