"""Per-class concentrations (stemjax.analysis.concentrations): counts, exact CIs, sublattices."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from stemjax.analysis import TOTAL, clopper_pearson, concentrations, plot_concentrations
from stemjax.specimen.registry import DefectClass, DefectRegistry

CLASSES = [("2Te", "chalcogen"), ("SV", "chalcogen"), ("VW", "metal"), ("SeW", "metal")]
FIELDS = {
    "a": {"height_px": 500, "width_px": 400, "pixel_size_A": 0.2},  # 80 × 100 Å = 80 nm²
    "b": {"height_px": 250, "width_px": 400, "pixel_size_A": 0.4},  # 100 × 160 Å = 160 nm²
}
AREA_NM2 = 240.0


def make_sites(n_metal: dict, n_chalcogen: dict) -> pd.DataFrame:
    rows = []
    for image_id in FIELDS:
        rows += [(image_id, "metal")] * n_metal[image_id]
        rows += [(image_id, "chalcogen")] * n_chalcogen[image_id]
    s = pd.DataFrame(rows, columns=["image_id", "sublattice"])
    s["x_A"] = s["y_A"] = s["x_px"] = s["y_px"] = 0.0
    return s


def make_defects(counts: dict) -> pd.DataFrame:
    """counts: (image_id, class_name) -> n."""
    sub = dict(CLASSES)
    rows = [(im, name, sub[name], 0.9) for (im, name), n in counts.items() for _ in range(n)]
    return pd.DataFrame(rows, columns=["image_id", "class_name", "sublattice", "score"])


SITES = make_sites({"a": 600, "b": 400}, {"a": 1500, "b": 500})  # 1000 metal, 2000 chalcogen
DEFECTS = make_defects(
    {("a", "VW"): 2, ("b", "VW"): 1, ("a", "SV"): 7, ("b", "SV"): 3, ("b", "2Te"): 5}
)


def test_exact_counts_and_per_site_use_the_class_sublattice():
    t = concentrations(DEFECTS, SITES, CLASSES, FIELDS)
    assert list(t.index) == ["2Te", "SV", "VW", "SeW", TOTAL]
    assert list(t["count"]) == [5, 10, 3, 0, 18]
    assert list(t["n_sites"]) == [2000, 2000, 1000, 1000, 3000]
    np.testing.assert_allclose(t["per_site"], [5 / 2000, 10 / 2000, 3 / 1000, 0, 18 / 3000])
    np.testing.assert_allclose(t["fraction_of_defects"], [5 / 18, 10 / 18, 3 / 18, 0, 1])
    np.testing.assert_allclose(t["per_nm2"], np.array([5, 10, 3, 0, 18]) / AREA_NM2)
    np.testing.assert_allclose(t["area_nm2"], AREA_NM2)


def test_per_nm2_uses_the_area_inside_the_edge_band():
    # predict drops a border band of edge_px: the analysed box spans pixel centres
    # [edge, size - 1 - edge], so field a (500 × 400 px at 0.2 Å) keeps 490 × 390 px with edge 4.5
    fields = {k: dict(v) for k, v in FIELDS.items()}
    fields["a"]["edge_px"] = 4.5
    t = concentrations(DEFECTS, SITES, CLASSES, fields)
    area = (490 * 390 * 0.04 + 160 * 100) / 100
    np.testing.assert_allclose(t["area_nm2"], area)
    np.testing.assert_allclose(t["per_nm2"], np.array([5, 10, 3, 0, 18]) / area)
    frame = pd.DataFrame(fields).T.rename_axis("image_id").fillna(0.0)
    np.testing.assert_allclose(concentrations(DEFECTS, SITES, CLASSES, frame)["area_nm2"], area)
    fields["b"]["edge_px"] = -1
    with pytest.raises(ValueError, match="edge_px"):
        concentrations(DEFECTS, SITES, CLASSES, fields)


def test_clopper_pearson_matches_scipy_and_known_values():
    t = concentrations(DEFECTS, SITES, CLASSES, FIELDS)
    lo, hi = t.loc["VW", ["per_site_lo", "per_site_hi"]]  # k = 3 of n = 1000 metal sites
    np.testing.assert_allclose([lo, hi], [0.000619, 0.008742], atol=1e-6)
    ci = stats.binomtest(3, 1000).proportion_ci(0.95, method="exact")
    np.testing.assert_allclose([lo, hi], [ci.low, ci.high], rtol=1e-9)
    ci90 = stats.binomtest(10, 2000).proportion_ci(0.9, method="exact")
    t90 = concentrations(DEFECTS, SITES, CLASSES, FIELDS, confidence=0.9)
    np.testing.assert_allclose(t90.loc["SV", ["per_site_lo", "per_site_hi"]], [ci90.low, ci90.high])
    ci = stats.binomtest(5, 18).proportion_ci(0.95, method="exact")
    np.testing.assert_allclose(
        t.loc["2Te", ["fraction_of_defects_lo", "fraction_of_defects_hi"]], [ci.low, ci.high]
    )


def test_intervals_contain_estimate_and_zero_count_class_has_positive_upper_bound():
    t = concentrations(DEFECTS, SITES, CLASSES, FIELDS)
    for q in ("per_site", "per_nm2", "fraction_of_defects"):
        assert (t[f"{q}_lo"] <= t[q]).all() and (t[q] <= t[f"{q}_hi"]).all()
    zero = t.loc["SeW"]
    assert zero["count"] == 0 and zero["per_site_lo"] == 0 and zero["per_nm2_lo"] == 0
    # exact k = 0 bounds: 1 - (α/2)^(1/n) per site, -ln(α/2) ≈ 3.689 counts per area
    np.testing.assert_allclose(zero["per_site_hi"], 1 - 0.025 ** (1 / 1000))
    np.testing.assert_allclose(zero["per_nm2_hi"], -np.log(0.025) / AREA_NM2)
    # Garwood for k = 3: (0.6187, 8.7673) counts
    np.testing.assert_allclose(
        t.loc["VW", ["per_nm2_lo", "per_nm2_hi"]] * AREA_NM2, [0.61867, 8.76727], atol=1e-4
    )


def test_registry_and_dataframe_fields_are_accepted():
    registry = DefectRegistry(
        (DefectClass(0, "none", None),)
        + tuple(DefectClass(i + 1, n, s) for i, (n, s) in enumerate(CLASSES))
    )
    fields = pd.DataFrame(FIELDS).T.rename_axis("image_id").reset_index()
    a = concentrations(DEFECTS, SITES, registry, fields)
    b = concentrations(DEFECTS, SITES, CLASSES, FIELDS)
    pd.testing.assert_frame_equal(a, b)
    assert "none" not in a.index


def test_bad_inputs_raise():
    bad = DEFECTS.copy()
    bad.loc[0, "class_name"] = "XYZ"
    with pytest.raises(ValueError, match="unknown classes"):
        concentrations(bad, SITES, CLASSES, FIELDS)
    bad = DEFECTS.copy()
    bad.loc[bad["class_name"] == "VW", "sublattice"] = "chalcogen"
    with pytest.raises(ValueError, match="wrong sublattice"):
        concentrations(bad, SITES, CLASSES, FIELDS)
    with pytest.raises(ValueError, match="not in fields"):
        concentrations(DEFECTS, SITES, CLASSES, {"a": FIELDS["a"]})


def test_clopper_pearson_edge_cases():
    lo, hi = clopper_pearson([0, 5, 5], [5, 5, 0])
    assert lo[0] == 0 and hi[1] == 1 and np.isnan(lo[2]) and np.isnan(hi[2])


def test_plot_concentrations(tmp_path):
    t = concentrations(DEFECTS, SITES, CLASSES, FIELDS)
    fig = plot_concentrations(t)
    assert len(fig.axes) == 2 and fig.axes[0].get_yscale() == "log"
    fig.savefig(tmp_path / "concentrations.png")
    assert (tmp_path / "concentrations.png").stat().st_size > 1000
    fig = plot_concentrations(t, quantities="per_site", log=False, include_total=True)
    assert len(fig.axes) == 1
    assert [x.get_text() for x in fig.axes[0].get_xticklabels()][-1] == TOTAL
