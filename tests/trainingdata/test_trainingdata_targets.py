"""Per-pixel targets rendered from labelled points (stemjax.trainingdata.targets)."""

import jax.numpy as jnp
import numpy as np

from stemjax.trainingdata.targets import render_class_map, render_heatmaps


def test_class_map_paints_disks_at_points():
    points = jnp.asarray([[10.3, 20.7], [40.0, 5.0], [30.0, 30.0]])
    classes = jnp.asarray([3, 5, 2])
    valid = jnp.asarray([True, True, False])
    m = np.asarray(render_class_map(points, classes, valid, (48, 40), radius_px=2.0))
    assert m[10, 21] == 3 and m[40, 5] == 5
    assert m[30, 30] == 0  # invalid label paints nothing
    assert m[10, 24] == 0 and m[13, 21] == 0  # outside the 2 px disk
    # disk area ≈ π r² pixels for each painted point
    assert 9 <= (m == 3).sum() <= 16 and 9 <= (m == 5).sum() <= 16


def test_class_map_ignores_pristine_and_out_of_image_points():
    points = jnp.asarray([[5.0, 5.0], [-10.0, 3.0], [3.0, 100.0]])
    classes = jnp.asarray([0, 4, 4])
    m = np.asarray(render_class_map(points, classes, jnp.ones(3, bool), (16, 16)))
    assert m.max() == 0


def test_heatmaps_peak_on_points_and_background_complements():
    points = jnp.asarray([[8.0, 9.0], [20.2, 12.6]])
    classes = jnp.asarray([1, 2])
    h = np.asarray(render_heatmaps(points, classes, jnp.ones(2, bool), (32, 24), 4, sigma_px=1.5))
    assert h.shape == (4, 32, 24)
    assert h[1, 8, 9] == 1.0 and h[2].max() > 0.9
    assert np.unravel_index(h[2].argmax(), h[2].shape) == (20, 13)
    np.testing.assert_allclose(h[0], 1.0 - h[1:].max(0))
    assert h[3].max() == 0.0
