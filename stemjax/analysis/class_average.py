"""Class averages: mean image of the isolated defects of each class, registered sub-pixel.

For each class, crops are cut centred exactly on each defect's sub-pixel position (cubic
spline interpolation, `scipy.ndimage.map_coordinates` order 3) onto a common grid in Å, so
averages from images with different pixel sizes line up; optionally each crop's centre is
refined by least-squares registration to the mean of the class's other crops (the sub-pixel
equivalent of the cross-correlation maximum for small shifts; bounded to ±`max_shift_px`).
Averaging N crops lowers the noise by √N and shows the defect's mean contrast, as in the class
averages of all seven defect types in the WSe2–Te paper (Figure 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy import ndimage
from scipy.spatial import cKDTree

from stemjax.analysis._common import class_names, classes_in_table, require_columns

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class ClassAverage:
    """Average of one class's normalised crops; the centre pixel sits on the defect position.

    image, std, sem: (S, S) mean, per-pixel standard deviation across crops (ddof 1) and
    standard error of the mean (std / √count), in normalised units (see `normalise`); NaN when
    count is 0 (std, sem also when 1). Rows run along +y (down), columns along +x.
    pixel_size_A: Å per pixel of these images (smallest source pixel size / upsample).
    index: `defects` index labels of the averaged defects; shifts_px: (count, 2) refinement
    offsets (dy, dx) in source-image px applied to each of them.
    """

    class_name: str
    image: np.ndarray
    std: np.ndarray
    sem: np.ndarray
    count: int
    pixel_size_A: float
    index: np.ndarray
    shifts_px: np.ndarray
    normalise: str

    @property
    def extent_A(self) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) in Å relative to the defect, for imshow(origin='upper')."""
        half = self.image.shape[0] / 2 * self.pixel_size_A
        return (-half, half, half, -half)


def _robust_normalise(image: np.ndarray) -> np.ndarray:
    """(image − median) / (1.4826 × MAD); falls back to the std if the MAD is 0."""
    med = np.median(image)
    scale = MAD_TO_SIGMA * np.median(np.abs(image - med))
    if not scale > 0:
        scale = image.std() or 1.0
    return (image - med) / scale


def _to_image(dy, dx, angle_rad: float):
    """Crop-frame (dy, dx) → image-frame (dy, dx) for a crop whose +x axis runs along the image
    direction `angle_rad` (from +x towards +y)."""
    c, s = np.cos(angle_rad), np.sin(angle_rad)
    return s * dx + c * dy, c * dx - s * dy


def _sample(
    coeffs: np.ndarray, centres_px: np.ndarray, offsets_px: np.ndarray, angle_rad: float
) -> np.ndarray:
    """(n, S, S) crops: spline coefficients sampled at centre (y, x) + offset grid (px), the
    grid rotated by `angle_rad` (`_to_image`)."""
    dy, dx = _to_image(offsets_px[:, None], offsets_px[None, :], angle_rad)
    rows = centres_px[:, 0, None, None] + dy[None]
    cols = centres_px[:, 1, None, None] + dx[None]
    rows, cols = np.broadcast_arrays(rows, cols)
    out = ndimage.map_coordinates(
        coeffs, [rows.ravel(), cols.ravel()], order=3, mode="mirror", prefilter=False
    )
    return out.reshape(rows.shape)


def _zscore(crops: np.ndarray) -> np.ndarray:
    mean = crops.mean(axis=(1, 2), keepdims=True)
    std = crops.std(axis=(1, 2), keepdims=True)
    return (crops - mean) / np.where(std > 0, std, 1.0)


def _align_shifts(crops: np.ndarray, total: np.ndarray, n: int, bound: float) -> np.ndarray:
    """(k, 2) sub-pixel (dy, dx) in crop px that move each crop onto the leave-one-out mean.

    One Gauss–Newton step of least-squares registration: fits crop ≈ a·T(u − δ) + b with T
    the mean of the other n − 1 crops, linearised as a·T − a·δ·∇T + b (solved per crop), so
    the estimate is sub-pixel, works for any upsampling and needs no search window; repeated
    `refine_iterations` times it converges. Clipped to ±`bound`; 0 where the fit is degenerate.
    """
    templ = (total[None] - crops) / (n - 1)
    gy, gx = np.gradient(templ, axis=(1, 2))
    design = np.stack([templ, gy, gx, np.ones_like(templ)], axis=1).reshape(len(crops), 4, -1)
    xtx = np.einsum("kip,kjp->kij", design, design)
    xty = np.einsum("kip,kp->ki", design, crops.reshape(len(crops), -1))
    ok = np.linalg.matrix_rank(xtx) == 4
    beta = np.zeros((len(crops), 4))
    if ok.any():
        beta[ok] = np.linalg.solve(xtx[ok], xty[ok][..., None])[..., 0]
    a = beta[:, 0]
    good = ok & (a > 0)
    shift = np.where(good[:, None], -beta[:, 1:3] / np.where(good, a, 1.0)[:, None], 0.0)
    return np.clip(shift, -bound, bound)


def class_averages(
    images: Mapping[str, tuple[np.ndarray, float]],
    defects: pd.DataFrame,
    *,
    crop_radius_A: float = 6.0,
    exclusion_radius_A: float = 3.0,
    upsample: int = 1,
    min_score: float = 0.0,
    refine_iterations: int = 1,
    max_shift_px: float = 1.0,
    normalise: Literal["image", "crop"] = "image",
    classes: Any = None,
    rotation_rad: Mapping[str, float] | None = None,
    cache_bytes: int = 2**30,
) -> dict[str, ClassAverage]:
    """Average the isolated defects of each class into a (2m+1)² image, m = ⌊radius / pixel⌋.

    images: image_id -> (2-D array, pixel size Å; square pixels). A defect is used only if its
    score is ≥ `min_score`; no other defect of the table (any class or score, same image) lies
    within `exclusion_radius_A` Å (≤ 0 disables) — isolated defects only, so neighbours do not
    blur the motif's core (the default, 3 Å, excludes defects on the nearest columns, 1.9 Å
    away, but not farther ones, which average out: excluding the whole crop radius leaves
    almost no crops at realistic rates, ~10 % of columns defective); and every sample point
    of its crop, widened by `max_shift_px` when refining, lies within the pixel-centre span
    [0, H−1] × [0, W−1].
    normalise: 'image' (default) maps each image to (I − median) / (1.4826 MAD) before
    cropping, so contrast stays comparable between classes and images; 'crop' z-scores each
    crop (zero mean, unit std), which removes per-crop background and gain.
    refine_iterations: rounds of least-squares registration of each crop to the mean of the
    others (`_align_shifts`), the total offset bounded to ±`max_shift_px` source px; 0 trusts
    the table's positions. Crops are made in chunks; the images' spline coefficients (8 B/px)
    are kept between passes up to `cache_bytes`, the rest recomputed on each pass.
    rotation_rad: image_id -> angle (rad, from +x towards +y) that becomes the crops' +x axis,
    e.g. each micrograph's lattice orientation (`Prediction.fields.lattice_angle_deg`), so
    crops from micrographs with different scan or lattice rotations average in one lattice
    frame instead of blurring into rings; None keeps the image frame.
    Classes: those of `classes` (DefectRegistry, pairs or names) or those in `defects`, in
    class_id order; a class without usable crops gets count 0 and NaN images.
    """
    if normalise not in ("image", "crop"):
        raise ValueError(f"normalise = {normalise!r} must be 'image' or 'crop'")
    if int(upsample) < 1 or crop_radius_A <= 0:
        raise ValueError("upsample must be >= 1 and crop_radius_A positive")
    require_columns(defects, ("image_id", "x_px", "y_px", "class_name"), "defects")
    if min_score > 0:
        require_columns(defects, ("score",), "defects (min_score > 0)")
    excl = float(exclusion_radius_A)
    images = {str(k): v for k, v in images.items()}
    ids = defects["image_id"].astype(str)
    missing = sorted(set(ids) - set(images))
    if missing:
        raise ValueError(f"defects of images {missing[:5]} not in `images`")
    names = classes_in_table(defects) if classes is None else class_names(classes)
    margin_px = max_shift_px if refine_iterations > 0 else 0.0
    angles = {}
    for image_id in set(ids):
        angle = 0.0 if rotation_rad is None else rotation_rad.get(image_id, np.nan)
        if not np.isfinite(angle):
            raise ValueError(
                f"rotation_rad has no finite angle for image {image_id!r} (no lattice "
                "orientation found in it, e.g. fields.lattice_angle_deg NaN); average in the "
                "image frame (rotation_rad=None, Prediction.class_averages(frame='image')) or "
                "leave its defects out"
            )
        angles[image_id] = float(angle)

    # candidates: scored and isolated, per image
    candidates = []
    for image_id, d in defects.groupby(ids, sort=False):
        ps = float(images[image_id][1])
        yx = d[["y_px", "x_px"]].to_numpy(np.float64)
        ok = d["class_name"].isin(names).to_numpy()
        if min_score > 0:
            ok = ok & (d["score"].to_numpy(float) >= min_score)
        if excl > 0 and len(d) > 1:
            n_within = cKDTree(yx * ps).query_ball_point(yx * ps, excl, return_length=True)
            ok = ok & (n_within <= 1)
        if ok.any():
            candidates.append((image_id, ps, d.index[ok], yx[ok], d["class_name"].to_numpy()[ok]))
    pixel_sizes = [c[1] for c in candidates] or [float(p) for _, p in images.values()]
    p_out = min(pixel_sizes) / int(upsample)
    m = int(np.floor(crop_radius_A / p_out + 1e-9))
    s = 2 * m + 1
    offsets_A = np.arange(-m, m + 1) * p_out

    # inside the image: jobs (image_id, ps, {class: (rows into the class arrays, yx)})
    jobs, index, scale = [], {n: [] for n in names}, {n: [] for n in names}
    for image_id, ps, idx, yx, cls in candidates:
        h, w = np.shape(images[image_id][0])[:2]
        # a rotated crop reaches √2 × its half-width along the diagonals
        corner = 1.0 if rotation_rad is None else np.sqrt(2.0)
        reach = corner * m * p_out / ps + margin_px
        inside = (yx >= reach).all(1) & (yx[:, 0] <= h - 1 - reach) & (yx[:, 1] <= w - 1 - reach)
        per_class = {}
        for name in names:
            sel = inside & (cls == name)
            if sel.any():
                start = sum(len(i) for i in index[name])
                per_class[name] = (np.arange(start, start + sel.sum()), yx[sel])
                index[name].append(idx[sel])
                scale[name].append(np.full(sel.sum(), p_out / ps))
        if per_class:
            jobs.append((image_id, ps, per_class))
    index = {n: np.concatenate(v) if v else np.zeros(0, int) for n, v in index.items()}
    scale = {n: np.concatenate(v) if v else np.zeros(0) for n, v in scale.items()}
    counts = {n: len(v) for n, v in index.items()}
    shifts = {n: np.zeros((counts[n], 2)) for n in names}
    chunk = max(1, 2**20 // (s * s))

    cache: dict[str, np.ndarray] = {}
    budget = [int(cache_bytes)]

    def spline(image_id):
        """Cubic-spline coefficients of the (normalised) image; cached within `cache_bytes`."""
        if image_id in cache:
            return cache[image_id]
        img = np.asarray(images[image_id][0], np.float64)
        if img.ndim != 2:
            raise ValueError(f"image {image_id!r} must be 2-D, has shape {img.shape}")
        src = _robust_normalise(img) if normalise == "image" else img
        coeffs = ndimage.spline_filter(src, order=3, mode="mirror")
        if coeffs.nbytes <= budget[0]:
            cache[image_id] = coeffs
            budget[0] -= coeffs.nbytes
        return coeffs

    def crops_stream():
        """Yield (class, rows, crops, angle) over all images, in chunks of about 2²⁰ samples."""
        for image_id, ps, per_class in jobs:
            coeffs = spline(image_id)
            for name, (rows, yx) in per_class.items():
                for a in range(0, len(rows), chunk):
                    r = rows[a : a + chunk]
                    centres = yx[a : a + chunk] + shifts[name][r]
                    crops = _sample(coeffs, centres, offsets_A / ps, angles[image_id])
                    yield (
                        name,
                        r,
                        _zscore(crops) if normalise == "crop" else crops,
                        angles[image_id],
                    )

    def sums():
        total = {n: np.zeros((s, s)) for n in names}
        square = {n: np.zeros((s, s)) for n in names}
        for name, _, crops, _ in crops_stream():
            total[name] += crops.sum(0)
            square[name] += (crops**2).sum(0)
        return total, square

    total, square = sums()
    refine = [n for n in names if counts[n] >= 2]
    for _ in range(int(refine_iterations) if s >= 3 else 0):
        steps = {n: np.zeros((counts[n], 2)) for n in refine}
        for name, rows, crops, angle in crops_stream():
            if name in steps:
                bound = max_shift_px / scale[name][rows].min()
                step = _align_shifts(crops, total[name], counts[name], bound)
                # crop (dy, dx) → image (dy, dx), then to source px
                step = np.stack(_to_image(step[:, 0], step[:, 1], angle), 1)
                steps[name][rows] = step * scale[name][rows, None]
        for name in refine:
            shifts[name] = np.clip(shifts[name] + steps[name], -max_shift_px, max_shift_px)
        total, square = sums()

    out = {}
    for name in names:
        n = counts[name]
        mean = total[name] / n if n else np.full((s, s), np.nan)
        if n > 1:
            std = np.sqrt(np.clip((square[name] - n * mean**2) / (n - 1), 0, None))
        else:
            std = np.full((s, s), np.nan)
        out[name] = ClassAverage(
            class_name=name,
            image=mean,
            std=std,
            sem=std / np.sqrt(max(n, 1)),
            count=n,
            pixel_size_A=float(p_out),
            index=index[name],
            shifts_px=shifts[name],
            normalise=normalise,
        )
    return out


def _nice_length(limit: float) -> float:
    """Largest of 1, 2, 5 × 10^k not above `limit`."""
    k = np.floor(np.log10(limit))
    for f in (5.0, 2.0, 1.0):
        if f * 10**k <= limit:
            return float(f * 10**k)
    return float(10**k)


def plot_class_averages(
    averages: Mapping[str, ClassAverage],
    classes: Any = None,
    *,
    ncols: int | None = None,
    scale_bar_A: float | None = None,
    cmap: str = "gray",
) -> Figure:
    """Grid of class averages, one panel per class, titled 'name' and 'n = count'.

    `classes` (DefectRegistry, pairs or names) sets the panels and their order (default: the
    keys of `averages`); a class absent from `averages` or with count 0 gets an empty panel.
    Each panel has its own contrast and a scale bar of `scale_bar_A` Å (default: a 1-2-5 value
    up to 40 % of the crop width).
    """
    names = list(averages) if classes is None else class_names(classes)
    if not names:
        raise ValueError("no classes to plot")
    ncols = ncols or min(len(names), 4)
    nrows = -(-len(names) // ncols)
    fig = Figure(figsize=(2.4 * ncols, 2.7 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, name in zip(axes, names, strict=False):
        avg = averages.get(name)
        count = 0 if avg is None else avg.count
        ax.set_title(f"{name}\nn = {count}", fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])
        if avg is None or count == 0:
            ax.set_facecolor("0.85")
            continue
        left, right, bottom, top = avg.extent_A
        ax.imshow(avg.image, extent=avg.extent_A, origin="upper", cmap=cmap)
        width = right - left
        bar = scale_bar_A or _nice_length(0.4 * width)
        x0, y0 = left + 0.08 * width, bottom - 0.1 * (bottom - top)
        ax.plot([x0, x0 + bar], [y0, y0], color="w", lw=3, solid_capstyle="butt")
        ax.text(
            x0 + bar / 2,
            y0 - 0.04 * width,
            f"{bar:g} Å",
            color="w",
            ha="center",
            va="bottom",
            fontsize="small",
        )
    for ax in axes[len(names) :]:
        fig.delaxes(ax)
    return fig
