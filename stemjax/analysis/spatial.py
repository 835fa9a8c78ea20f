"""Are defects clustered or spread out? Tests against random placement on the same sites.

The null model puts the same number of defects, per image and per sublattice, uniformly at
random on that image's sites of that sublattice (without replacement). Comparing with it
rather than with a Poisson process in the plane accounts for the discrete lattice (no pairs
closer than a site spacing), the two sublattices and the field edges, so observed/null ratios
are free of the usual Clark–Evans edge and lattice biases.

Defect positions are snapped to the nearest site of their sublattice in their image by default
(`snap_to_sites`), so that detector localisation jitter (~0.1 Å) does not bias the comparison
with null placements, which sit exactly on sites (two defects snapped to one site are 0 Å
apart). Distances are in Å (x_A, y_A); pairs are only ever formed within one image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.spatial import cKDTree

from stemjax.analysis._common import check_images, require_columns, xy_A


@dataclass(frozen=True)
class NearestNeighbourResult:
    """Mean nearest-neighbour distance of defects vs random placement on the same sites.

    observed_mean_A: mean over defects (in images with ≥ 2 of them) of the distance (Å) to the
    nearest other defect of the same image; null_means_A: (n_random,) the same statistic for
    each random placement; null_mean_A, null_std_A (ddof 1); z = (observed − null mean) / null
    std (negative: clustered, positive: more regular than random); p_value: two-sided
    Monte-Carlo p, min(1, 2 min(1 + #null ≤ obs, 1 + #null ≥ obs) / (n_random + 1));
    ratio = observed / null mean (Clark–Evans-like, < 1 clustered); n_defects: defects
    entering the mean; observed_distances_A: (n_defects,) per-defect distances.
    """

    class_name: str | tuple[str, ...] | None
    n_defects: int
    observed_mean_A: float
    null_mean_A: float
    null_std_A: float
    z: float
    p_value: float
    ratio: float
    null_means_A: np.ndarray
    observed_distances_A: np.ndarray


@dataclass(frozen=True)
class PairCorrelationResult:
    """Pair correlation g(r) of defects relative to random placement on the same sites.

    r_A: (nbins,) bin centres (Å); edges_A: (nbins + 1,) bin edges, bins (r_i, r_i+1];
    observed_pairs: unordered defect pairs per bin (same image only); random_mean_pairs: mean
    of the random placements; g = observed / random mean (NaN where no site pairs exist, e.g.
    below the site spacing); g_lo, g_hi: central `confidence` band of the random placements'
    own g, i.e. where g falls without any spatial correlation.
    """

    class_name: str | tuple[str, ...] | None
    r_A: np.ndarray
    edges_A: np.ndarray
    g: np.ndarray
    g_lo: np.ndarray
    g_hi: np.ndarray
    observed_pairs: np.ndarray
    random_mean_pairs: np.ndarray
    n_random: int
    confidence: float


class _Placement:
    """Selected defects and their (image, sublattice) site groups, images laid side by side.

    Image i is shifted along x by i × pitch, with pitch large enough that points of different
    images are farther apart than `reach_A` plus any in-image distance, so one KD-tree serves
    all images and cross-image neighbours are cut off by `max_in_image_A`.
    """

    def __init__(self, defects, sites, class_name, snap_to_sites: bool, reach_A: float):
        require_columns(defects, ("image_id", "x_A", "y_A", "class_name", "sublattice"), "defects")
        require_columns(sites, ("image_id", "x_A", "y_A", "sublattice"), "sites")
        if class_name is not None:
            wanted = [class_name] if isinstance(class_name, str) else list(class_name)
            defects = defects[defects["class_name"].isin(wanted)]
        check_images(
            defects["image_id"].astype(str).unique(),
            sites["image_id"].astype(str),
            "defects",
            "sites",
        )
        site_xy = xy_A(sites)
        d_xy = xy_A(defects)
        both = np.concatenate([site_xy, d_xy]) if len(site_xy) else d_xy
        lo, hi = both.min(0), both.max(0)
        self.max_in_image_A = float(np.hypot(*(hi - lo))) + 1.0
        pitch = (hi - lo)[0] + self.max_in_image_A + reach_A + 10.0
        images = sorted(set(defects["image_id"].astype(str)))
        shift = {im: i * pitch for i, im in enumerate(images)}

        s_groups = dict(
            tuple(sites.groupby([sites["image_id"].astype(str), sites["sublattice"].astype(str)]))
        )
        d_groups = defects.groupby(
            [defects["image_id"].astype(str), defects["sublattice"].astype(str)]
        )
        self.groups: list[tuple[np.ndarray, int]] = []
        observed = []
        for (im, sub), d in d_groups:
            s = s_groups.get((im, sub))
            if s is None or len(s) < len(d):
                n = 0 if s is None else len(s)
                raise ValueError(
                    f"image {im!r}: {len(d)} {sub} defects but only {n} {sub} sites in `sites`"
                )
            pts = xy_A(s) + [shift[im], 0.0]
            obs = xy_A(d) + [shift[im], 0.0]
            if snap_to_sites:
                obs = pts[cKDTree(pts).query(obs)[1]]
            self.groups.append((pts, len(d)))
            observed.append(obs)
        self.observed = np.concatenate(observed) if observed else np.zeros((0, 2))

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """One random placement: (N, 2) positions in the order of `observed`."""
        if not self.groups:
            return np.zeros((0, 2))
        return np.concatenate(
            [pts[rng.choice(len(pts), k, replace=False)] for pts, k in self.groups]
        )


def _nn_distances(points: np.ndarray, upper_A: float) -> np.ndarray:
    """(N,) distance to the nearest other point closer than `upper_A`, inf if none."""
    if len(points) < 2:
        return np.full(len(points), np.inf)
    d, _ = cKDTree(points).query(points, k=2, distance_upper_bound=upper_A)
    return d[:, 1]


def nearest_neighbour_test(
    defects: pd.DataFrame,
    sites: pd.DataFrame,
    *,
    class_name: str | Sequence[str] | None = None,
    n_random: int = 200,
    seed: int = 0,
    snap_to_sites: bool = True,
) -> NearestNeighbourResult:
    """Mean nearest-neighbour distance (Å) of defects vs `n_random` random placements.

    `class_name`: one class, a list of classes, or None for all defects. The null (module
    docstring) keeps, per image and sublattice, the number of defects and draws their sites
    uniformly without replacement; only images with ≥ 2 selected defects contribute.
    """
    if n_random < 2:
        raise ValueError(f"n_random = {n_random} must be >= 2")
    placement = _Placement(defects, sites, class_name, snap_to_sites, reach_A=0.0)
    upper = placement.max_in_image_A
    obs = _nn_distances(placement.observed, upper)
    has = np.isfinite(obs)
    if has.sum() == 0:
        raise ValueError("no image has two or more of the selected defects")
    rng = np.random.default_rng(seed)
    null = np.empty(n_random)
    for i in range(n_random):
        d = _nn_distances(placement.draw(rng), upper)
        null[i] = d[has].mean()
    observed = float(obs[has].mean())
    mean, std = float(null.mean()), float(null.std(ddof=1))
    tail = min(1 + np.sum(null <= observed), 1 + np.sum(null >= observed))
    return NearestNeighbourResult(
        class_name=class_name
        if class_name is None or isinstance(class_name, str)
        else tuple(class_name),
        n_defects=int(has.sum()),
        observed_mean_A=observed,
        null_mean_A=mean,
        null_std_A=std,
        z=(observed - mean) / std if std > 0 else float("nan"),
        p_value=float(min(1.0, 2 * tail / (n_random + 1))),
        ratio=observed / mean,
        null_means_A=null,
        observed_distances_A=obs[has],
    )


def _pair_counts(points: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Unordered pairs per bin (edges[i], edges[i+1]] among `points`."""
    if len(points) < 2:
        return np.zeros(len(edges) - 1)
    tree = cKDTree(points)
    cumulative = tree.count_neighbors(tree, edges).astype(np.float64)
    return np.diff(cumulative) / 2


def pair_correlation(
    defects: pd.DataFrame,
    sites: pd.DataFrame,
    *,
    class_name: str | Sequence[str] | None = None,
    r_max_A: float = 30.0,
    dr_A: float = 1.0,
    n_random: int = 50,
    seed: int = 0,
    confidence: float = 0.95,
    snap_to_sites: bool = True,
) -> PairCorrelationResult:
    """g(r) = observed pair counts / mean pair counts of random placements on the same sites.

    Bins of width `dr_A` up to `r_max_A` (Å); same null and `class_name` selection as
    `nearest_neighbour_test`. g ≈ 1 without correlation, > 1 at small r for clustering.
    """
    if r_max_A <= 0 or dr_A <= 0:
        raise ValueError("r_max_A and dr_A must be positive")
    edges = np.arange(0.0, r_max_A + 0.5 * dr_A, dr_A)
    placement = _Placement(defects, sites, class_name, snap_to_sites, reach_A=float(edges[-1]))
    observed = _pair_counts(placement.observed, edges)
    rng = np.random.default_rng(seed)
    random = np.stack([_pair_counts(placement.draw(rng), edges) for _ in range(n_random)])
    mean = random.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        g = np.where(mean > 0, observed / mean, np.nan)
        g_random = np.where(mean > 0, random / mean, np.nan)
    alpha = 1 - confidence
    lo, hi = np.quantile(g_random, [alpha / 2, 1 - alpha / 2], axis=0)
    return PairCorrelationResult(
        class_name=class_name
        if class_name is None or isinstance(class_name, str)
        else tuple(class_name),
        r_A=0.5 * (edges[1:] + edges[:-1]),
        edges_A=edges,
        g=g,
        g_lo=lo,
        g_hi=hi,
        observed_pairs=observed,
        random_mean_pairs=mean,
        n_random=n_random,
        confidence=confidence,
    )


def _label(class_name) -> str:
    if class_name is None:
        return "all defects"
    return class_name if isinstance(class_name, str) else ", ".join(class_name)


def plot_spatial_statistics(
    nn_result: NearestNeighbourResult | None, pcf_result: PairCorrelationResult | None
) -> Figure:
    """Left: null distribution of the mean NN distance with the observed value; right: g(r)."""
    panels = [r for r in (nn_result, pcf_result) if r is not None]
    if not panels:
        raise ValueError("nothing to plot: both results are None")
    fig = Figure(figsize=(4.6 * len(panels), 3.6))
    axes = list(fig.subplots(1, len(panels), squeeze=False)[0])
    if nn_result is not None:
        ax = axes.pop(0)
        null = np.asarray(nn_result.null_means_A)
        bins = 30 if np.ptp(null) > 1e-9 * max(abs(float(null.mean())), 1.0) else 1  # degenerate
        ax.hist(null, bins=bins, color="0.7", label="random on sites")
        ax.axvline(nn_result.observed_mean_A, color="C3", lw=2, label="observed")
        ax.set_xlabel("mean nearest-neighbour distance (Å)")
        ax.set_ylabel("random placements")
        ax.set_title(
            f"{_label(nn_result.class_name)}: z = {nn_result.z:.2f}, p = {nn_result.p_value:.3g}"
            f"\nratio = {nn_result.ratio:.3f}, n = {nn_result.n_defects}",
            fontsize="medium",
        )
        ax.legend(fontsize="small", frameon=False)
    if pcf_result is not None:
        ax = axes.pop(0)
        r = pcf_result
        ax.fill_between(
            r.r_A,
            r.g_lo,
            r.g_hi,
            step="mid",
            color="0.8",
            label=f"random on sites ({r.confidence:.0%})",
        )
        ax.step(r.r_A, r.g, where="mid", color="C0", label="observed")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xlabel("r (Å)")
        ax.set_ylabel("g(r)")
        ax.set_xlim(0, r.edges_A[-1])
        ax.set_title(f"{_label(r.class_name)}: pair correlation", fontsize="medium")
        ax.legend(fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
