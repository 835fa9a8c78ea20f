"""Per-class defect density maps (Gaussian kernel density, defects per nm²), and their figure.

Edge handling: each defect's Gaussian kernel is integrated exactly over the map's bins
(differences of the normal CDF along x and y) and renormalised to unit mass *inside the field*,
so a defect near the border is not under-counted (no drop of density at the edges) and the map
integrates to the defect count exactly: sum(map) × bin area = count, for defects anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.special import ndtr

from stemjax.analysis._common import (
    analysed_span_px,
    check_images,
    class_names,
    classes_in_table,
    field_table,
    require_columns,
)

A2_PER_NM2 = 100.0


class DensityMaps(dict):
    """class_name -> (ny, nx) density map in defects per nm² of one image (a plain dict).

    Attributes: image_id; bin_A (y, x) bin size in Å (the field is split into a whole number
    of bins, so this is the requested bin rounded to fit); extent_A (left, right, bottom, top)
    in Å for `imshow(origin='upper')`, the field spanning x, y ∈ [-½ px, size - ½ px] × pixel
    size (or [edge, size − 1 − edge] px when the field has an `edge_px` band); bandwidth_A.
    """

    image_id: str
    bin_A: tuple[float, float]
    extent_A: tuple[float, float, float, float]
    bandwidth_A: float


def _bin_weights(pos_A: np.ndarray, edges_A: np.ndarray, sigma_A: float) -> np.ndarray:
    """(N, nbins) Gaussian mass of each position's kernel in each bin, renormalised to 1."""
    cdf = ndtr((edges_A[None, :] - pos_A[:, None]) / sigma_A)
    w = np.diff(cdf, axis=1)
    inside = cdf[:, -1] - cdf[:, 0]
    return w / np.maximum(inside, 1e-300)[:, None]


def density_maps(
    defects: pd.DataFrame,
    fields: Any,
    *,
    bandwidth_A: float = 20.0,
    bin_A: float | None = None,
    classes: Any = None,
) -> dict[str, DensityMaps]:
    """Gaussian kernel density of each class per image, in defects per nm².

    `bandwidth_A` is the kernel's standard deviation (Å); `bin_A` the map's bin size (Å,
    default bandwidth / 4, rounded so a whole number of bins spans each field). Maps cover each
    field of `fields` (all its images, also those without defects); classes are those of
    `classes` (DefectRegistry, pairs or names; zero maps for absent classes) or, by default,
    those present in `defects` in class_id order. Edge-corrected (module docstring): each
    map's sum × bin area (nm²) equals the class's count in that image.
    Returns image_id -> `DensityMaps` (class_name -> (ny, nx) array; row 0 = top, y = 0).
    """
    if bandwidth_A <= 0:
        raise ValueError(f"bandwidth_A = {bandwidth_A} must be positive")
    bin_A = bandwidth_A / 4 if bin_A is None else float(bin_A)
    if bin_A <= 0:
        raise ValueError(f"bin_A = {bin_A} must be positive")
    require_columns(defects, ("image_id", "x_px", "y_px", "class_name"), "defects")
    f = field_table(fields)
    check_images(defects["image_id"].astype(str).unique(), f.index, "defects", "fields")
    names = classes_in_table(defects) if classes is None else class_names(classes)
    by_image = dict(tuple(defects.groupby(defects["image_id"].astype(str), sort=False)))

    out: dict[str, DensityMaps] = {}
    for image_id, (h_px, w_px, ps, edge) in f.iterrows():
        lo_x, hi_x = (float(b) * ps for b in analysed_span_px(w_px, edge))
        lo_y, hi_y = (float(b) * ps for b in analysed_span_px(h_px, edge))
        nx = max(1, round((hi_x - lo_x) / bin_A))
        ny = max(1, round((hi_y - lo_y) / bin_A))
        ex, ey = np.linspace(lo_x, hi_x, nx + 1), np.linspace(lo_y, hi_y, ny + 1)
        bin_area_nm2 = (ex[1] - ex[0]) * (ey[1] - ey[0]) / A2_PER_NM2
        maps = DensityMaps()
        maps.image_id = str(image_id)
        maps.bin_A = (float(ey[1] - ey[0]), float(ex[1] - ex[0]))
        maps.extent_A = (lo_x, hi_x, hi_y, lo_y)
        maps.bandwidth_A = float(bandwidth_A)
        d = by_image.get(image_id)
        for name in names:
            sel = d[d["class_name"] == name] if d is not None else d
            if sel is None or len(sel) == 0:
                maps[name] = np.zeros((ny, nx))
                continue
            wx = _bin_weights(sel["x_px"].to_numpy(float) * ps, ex, bandwidth_A)
            wy = _bin_weights(sel["y_px"].to_numpy(float) * ps, ey, bandwidth_A)
            maps[name] = (wy.T @ wx) / bin_area_nm2
        out[str(image_id)] = maps
    return out


def plot_density_maps(
    maps: dict[str, DensityMaps], image_id: str, *, classes: Sequence[str] | None = None
) -> Figure:
    """One panel per class of image `image_id`'s density maps, axes in Å, colourbar in nm⁻²."""
    m = maps[str(image_id)]
    names = list(m) if classes is None else list(classes)
    if not names:
        raise ValueError(
            f"plot_density_maps: no classes to plot for image {image_id!r} (empty defect table?); "
            "pass classes=... to show empty maps"
        )
    ncols = min(4, max(1, len(names)))
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(3.6 * ncols, 3.1 * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    extent = getattr(m, "extent_A", None)
    for ax, name in zip(axes, names, strict=False):
        im = ax.imshow(m[name], extent=extent, origin="upper", cmap="magma", vmin=0)
        ax.set_title(name)
        ax.set_xlabel("x (Å)")
        ax.set_ylabel("y (Å)")
        fig.colorbar(im, ax=ax, label="defects nm⁻²", shrink=0.85)
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    bw = getattr(m, "bandwidth_A", None)
    fig.suptitle(f"{image_id}" + (f" — Gaussian kernel σ = {bw:g} Å" if bw else ""))
    fig.tight_layout()
    return fig
