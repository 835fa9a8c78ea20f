"""Clustering tests vs random placement on the same sites (stemjax.analysis.spatial)."""

import numpy as np
import pandas as pd

from stemjax.analysis import nearest_neighbour_test, pair_correlation, plot_spatial_statistics

A = 3.297  # Å, WSe2 lattice constant


def honeycomb_sites(image_ids, size_A=150.0) -> pd.DataFrame:
    """Metal sites on a hexagonal lattice, chalcogen sites at (a1 + a2) / 3, in a square field."""
    a1, a2 = np.array([A, 0.0]), np.array([A / 2, A * np.sqrt(3) / 2])
    n = int(size_A / A) + 2
    i, j = np.meshgrid(np.arange(-n, 2 * n), np.arange(0, 2 * n), indexing="ij")
    base = (i[..., None] * a1 + j[..., None] * a2).reshape(-1, 2)
    frames = []
    for image_id in image_ids:
        for sub, offset in (("metal", 0.0), ("chalcogen", (a1 + a2) / 3)):
            p = base + offset
            p = p[((p >= 0) & (p < size_A)).all(1)]
            frames.append(
                pd.DataFrame(
                    {"image_id": image_id, "x_A": p[:, 0], "y_A": p[:, 1], "sublattice": sub}
                )
            )
    return pd.concat(frames, ignore_index=True)


SITES = honeycomb_sites(["a", "b"])


def as_defects(rows: pd.DataFrame, jitter_A=0.0, seed=0) -> pd.DataFrame:
    d = rows[["image_id", "x_A", "y_A", "sublattice"]].copy()
    d["class_name"] = np.where(d["sublattice"] == "metal", "VW", "SV")
    d[["x_A", "y_A"]] += np.random.default_rng(seed).normal(0, jitter_A, (len(d), 2))
    return d.reset_index(drop=True)


def random_defects(n_per_image, seed, jitter_A=0.0):
    rng = np.random.default_rng(seed)
    parts = [
        g.iloc[rng.choice(len(g), n_per_image, replace=False)] for _, g in SITES.groupby("image_id")
    ]
    return as_defects(pd.concat(parts), jitter_A, seed)


def clustered_defects(n_per_image, seed):
    """Defects on random sites within 8 Å of three centres per image."""
    rng = np.random.default_rng(seed)
    parts = []
    for _, g in SITES.groupby("image_id"):
        xy = g[["x_A", "y_A"]].to_numpy()
        centres = rng.uniform(20, 130, size=(3, 2))
        near = np.flatnonzero((np.linalg.norm(xy[:, None] - centres[None], axis=-1) < 8).any(1))
        parts.append(g.iloc[rng.choice(near, n_per_image, replace=False)])
    return as_defects(pd.concat(parts))


def test_clustered_defects_give_negative_z_and_small_p():
    r = nearest_neighbour_test(clustered_defects(60, 1), SITES, n_random=100, seed=0)
    assert r.z < -5 and r.p_value <= 2 / 101 and r.ratio < 0.8
    assert r.n_defects == 120 and r.null_means_A.shape == (100,)
    assert r.observed_mean_A < r.null_means_A.min()


def test_random_defects_on_sites_are_consistent_with_the_null():
    # localisation jitter of 0.1 Å is removed by snapping to the sites
    for seed in (2, 3):
        r = nearest_neighbour_test(random_defects(150, seed, 0.1), SITES, n_random=200, seed=0)
        assert abs(r.z) < 3 and r.p_value > 0.01 and abs(r.ratio - 1) < 0.1


def test_positions_are_snapped_to_sites():
    exact = nearest_neighbour_test(random_defects(150, 7), SITES, n_random=5)
    jittered = random_defects(150, 7, jitter_A=0.1)
    snapped = nearest_neighbour_test(jittered, SITES, n_random=5)
    raw = nearest_neighbour_test(jittered, SITES, n_random=5, snap_to_sites=False)
    np.testing.assert_allclose(snapped.observed_distances_A, exact.observed_distances_A)
    assert not np.allclose(raw.observed_distances_A, exact.observed_distances_A)


def test_null_places_defects_on_their_own_sublattice():
    # 40 % of metal sites: nearest metal–metal distance is a, so every null mean is ≥ a
    metal = SITES[(SITES["sublattice"] == "metal") & (SITES["image_id"] == "a")]
    d = as_defects(metal.sample(frac=0.4, random_state=0))
    r = nearest_neighbour_test(d, SITES, n_random=20, seed=0)
    assert r.null_means_A.min() >= A - 1e-9 and r.observed_distances_A.min() >= A - 1e-9


def test_pairs_only_within_an_image():
    # the same two far-apart sites in image a, neighbouring sites in image b
    sa = SITES[SITES["image_id"] == "a"].reset_index(drop=True)
    xy = sa[["x_A", "y_A"]].to_numpy()
    i = np.argmin(np.linalg.norm(xy - [30, 30], axis=1))
    j = np.argmin(np.linalg.norm(xy - [120, 30], axis=1))
    far = np.linalg.norm(xy[i] - xy[j])
    d = as_defects(sa.iloc[[i, j]])
    d_b = d.assign(image_id="b", x_A=d["x_A"] + A)
    r = nearest_neighbour_test(pd.concat([d, d_b]), SITES, n_random=5)
    np.testing.assert_allclose(r.observed_distances_A, far)


def test_class_selection():
    d = random_defects(150, 4)
    r = nearest_neighbour_test(d, SITES, class_name="VW", n_random=10)
    assert r.n_defects == (d["class_name"] == "VW").sum()


def test_pair_correlation_random_is_flat_and_cluster_peaks_at_small_r():
    p = pair_correlation(random_defects(300, 5), SITES, r_max_A=30, dr_A=1.0, n_random=50)
    assert p.r_A.shape == (30,) and np.all(np.isnan(p.g[p.r_A < 1.5]))  # no site pairs < 1.9 Å
    ok = p.r_A > 3
    assert abs(np.nanmean(p.g[ok]) - 1) < 0.05
    assert np.mean((p.g[ok] >= p.g_lo[ok]) & (p.g[ok] <= p.g_hi[ok])) > 0.8
    c = pair_correlation(clustered_defects(60, 1), SITES, r_max_A=30, n_random=20)
    assert np.nanmean(c.g[c.r_A < 8]) > 3 and np.nanmean(c.g[c.r_A > 25]) < 1


def test_plot_spatial_statistics(tmp_path):
    d = clustered_defects(40, 6)
    fig = plot_spatial_statistics(
        nearest_neighbour_test(d, SITES, n_random=20), pair_correlation(d, SITES, n_random=10)
    )
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "g(r)"
    fig.savefig(tmp_path / "spatial.png")
    assert (tmp_path / "spatial.png").stat().st_size > 1000
    assert (
        len(plot_spatial_statistics(nearest_neighbour_test(d, SITES, n_random=5), None).axes) == 1
    )
