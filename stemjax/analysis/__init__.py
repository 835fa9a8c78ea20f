"""Statistics and figures from a table of detected defects (host-side NumPy/SciPy/pandas).

Input schema (as produced by prediction):

- `defects`: DataFrame, one row per detected defect: `image_id` (str); `x_px`, `y_px` (float,
  px of the analysed micrograph: x along columns (axis 1), y along rows (axis 0), origin at the
  centre of the top-left pixel); `x_A`, `y_A` (Å = px × pixel size); `class_id` (int, 1..K);
  `class_name` (str); `sublattice` (str, 'metal' or 'chalcogen'); `score` (float, 0..1).
- `sites`: DataFrame of all lattice sites (atomic columns, defective or not): `image_id`,
  `x_px`, `y_px`, `x_A`, `y_A`, `sublattice`. Site counts per sublattice (denominators of
  concentrations) and the null model of the spatial tests come from here.
- `fields`: DataFrame (column or index `image_id`) or dict image_id -> mapping, with
  `height_px`, `width_px`, `pixel_size_A` (Å/px): field areas and map grids. A field spans
  [-½, size - ½] px along each axis; an optional `edge_px` (px, as predict writes it) leaves a
  border band out, the analysed box then spanning pixel centres [edge, size − 1 − edge].
- `classes`: the K defect classes in order, as a `stemjax.specimen.registry.DefectRegistry`
  ('none', id 0, is skipped) or a list of (class_name, sublattice) pairs, so that classes
  without detections still appear.
- `images` (class averages): dict image_id -> (2-D array, pixel size Å).

Functions (each with a `plot_*` companion returning a `matplotlib.figure.Figure`, no pyplot):
`concentrations` (per class counts, per-site and per-nm² concentrations, exact CIs),
`density_maps` (Gaussian kernel density, defects per nm², edge-corrected),
`nearest_neighbour_test` and `pair_correlation` (clustering vs random placement on the same
sites), `class_averages` (sub-pixel registered mean crop of the isolated defects per class).
"""

from stemjax.analysis.class_average import ClassAverage, class_averages, plot_class_averages
from stemjax.analysis.concentration import (
    TOTAL,
    clopper_pearson,
    concentrations,
    garwood,
    plot_concentrations,
)
from stemjax.analysis.density import DensityMaps, density_maps, plot_density_maps
from stemjax.analysis.spatial import (
    NearestNeighbourResult,
    PairCorrelationResult,
    nearest_neighbour_test,
    pair_correlation,
    plot_spatial_statistics,
)

__all__ = [
    "TOTAL",
    "ClassAverage",
    "DensityMaps",
    "NearestNeighbourResult",
    "PairCorrelationResult",
    "class_averages",
    "clopper_pearson",
    "concentrations",
    "density_maps",
    "garwood",
    "nearest_neighbour_test",
    "pair_correlation",
    "plot_class_averages",
    "plot_concentrations",
    "plot_density_maps",
    "plot_spatial_statistics",
]
