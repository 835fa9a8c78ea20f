"""Defect density maps (stemjax.analysis.density): units, integral = count, edges, clusters."""

import numpy as np
import pandas as pd

from stemjax.analysis import density_maps, plot_density_maps

PS = 0.5  # Å/px
FIELDS = pd.DataFrame(
    {"image_id": ["a", "b"], "height_px": [800, 400], "width_px": [1000, 400], "pixel_size_A": PS}
)  # a: 400 Å (y) × 500 Å (x)


def defects_at(image_id, xy_A, class_name="SV"):
    xy = np.asarray(xy_A, float).reshape(-1, 2)
    return pd.DataFrame(
        {
            "image_id": image_id,
            "x_px": xy[:, 0] / PS,
            "y_px": xy[:, 1] / PS,
            "x_A": xy[:, 0],
            "y_A": xy[:, 1],
            "class_name": class_name,
            "class_id": 3,
            "sublattice": "chalcogen",
        }
    )


def integral(m, maps):
    by, bx = maps.bin_A
    return m.sum() * by * bx / 100.0  # nm⁻² × nm²


def test_integral_equals_count_inside_and_near_edges():
    rng = np.random.default_rng(0)
    inner = rng.uniform([80, 80], [420, 320], size=(40, 2))  # ≥ 4 σ from the edges
    edge = np.array([[0.0, 0.0], [499.0, 200.0], [3.0, 398.0]])  # on / near the border
    d = pd.concat([defects_at("a", inner), defects_at("a", edge, "VW")])
    maps = density_maps(d, FIELDS, bandwidth_A=20.0)
    assert set(maps) == {"a", "b"} and set(maps["a"]) == {"SV", "VW"}
    assert abs(integral(maps["a"]["SV"], maps["a"]) - 40) < 0.02 * 40
    # edge correction: the kernel mass outside the field is put back, nothing is lost
    np.testing.assert_allclose(integral(maps["a"]["VW"], maps["a"]), 3, rtol=1e-9)
    assert np.all(maps["b"]["SV"] == 0) and maps["b"]["SV"].shape == (40, 40)
    assert maps["a"]["SV"].shape == (80, 100)  # (y, x) bins of 5 Å = bandwidth / 4


def test_maps_cover_the_box_inside_an_edge_band():
    fields = FIELDS.assign(edge_px=[10.0, 0.0])  # predict's band: pixel centres 10 .. size - 11
    edge = np.array([[10 * PS, 10 * PS], [499.0 - 10 * PS, 200.0]])
    maps = density_maps(defects_at("a", edge), fields, bandwidth_A=20.0)
    left, right, bottom, top = maps["a"].extent_A
    np.testing.assert_allclose([left, right, top, bottom], np.array([10, 989, 10, 789]) * PS)
    np.testing.assert_allclose(integral(maps["a"]["SV"], maps["a"]), 2, rtol=1e-9)
    assert maps["b"].extent_A[0] == -0.5 * PS


def test_single_defect_peak_is_gaussian_in_per_nm2():
    maps = density_maps(defects_at("a", [[250.0, 200.0]]), FIELDS, bandwidth_A=10.0, bin_A=1.0)
    peak = 100.0 / (2 * np.pi * 10.0**2)  # nm⁻²: 1 / (2π σ²) per Å² × 100 Å²/nm²
    np.testing.assert_allclose(maps["a"]["SV"].max(), peak, rtol=0.01)


def test_cluster_shows_higher_density_where_it_is():
    rng = np.random.default_rng(1)
    background = rng.uniform([0, 0], [500, 400], size=(60, 2))
    cluster = rng.normal([380.0, 90.0], 6.0, size=(60, 2))  # x = 380 Å, y = 90 Å
    maps = density_maps(defects_at("a", np.vstack([background, cluster])), FIELDS)
    m = maps["a"]["SV"]
    row, col = np.unravel_index(m.argmax(), m.shape)
    by, bx = maps["a"].bin_A
    left, _, _, top = maps["a"].extent_A
    assert abs(left + (col + 0.5) * bx - 380) < 10 and abs(top + (row + 0.5) * by - 90) < 10
    assert m.max() > 10 * np.median(m)


def test_classes_argument_adds_empty_maps():
    maps = density_maps(defects_at("a", [[100.0, 100.0]]), FIELDS, classes=["SV", "DV"])
    assert list(maps["a"]) == ["SV", "DV"] and not maps["a"]["DV"].any()


def test_plot_density_maps(tmp_path):
    d = pd.concat([defects_at("a", [[100.0, 100.0]]), defects_at("a", [[300, 50]], "VW")])
    fig = plot_density_maps(density_maps(d, FIELDS), "a")
    assert len(fig.axes) == 4  # 2 panels + 2 colourbars
    assert "nm⁻²" in fig.axes[2].get_ylabel() and fig.axes[0].get_xlabel() == "x (Å)"
    fig.savefig(tmp_path / "density.png")
    assert (tmp_path / "density.png").stat().st_size > 1000
