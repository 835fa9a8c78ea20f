"""Tiled U-Net inference on arbitrarily large normalised images.

Overlap-tile scheme (Ronneberger et al. 2015): the image is cut into windows of `tile_px`
whose cores (`tile_px − 2·margin_px` apart) partition the image; each window gives the network
at least `margin_px` of real context around its core, and a detection is kept by the one window
whose core contains it, so no defect is counted twice or lost at a seam.

Two steps. `logit_map` runs the network on batches of windows (device memory: one batch) and
stitches the cores' logits into one map of the image (C × 4 bytes per pixel: 33.5 MB for a 1024²
image and 8 classes; `predict` writes it to a memory-mapped file, so its memory stays bounded by
the tile batch, not the image). `decode_map` decodes that map on the same windows, so peak
suppression at a seam sees the neighbouring core's logits, as in an untiled pass. Keeping the
map lets `predict(site_prior='estimate')` decode the network's output twice while running the
network once.

Windows never reach past the image: at its border a window is moved inwards, so the network
sees the micrograph's true edge, as it saw the edges of its training images, and never mirrored
lattice (reflect-padding a margin or out to a whole number of cores made confident defects at up
to ~100 px from the edge score p_def ≈ 0.2–0.9 with the shipped model). The image is padded
(reflect) only to a multiple of the network's down-sampling factor, fewer pixels than that
factor. An image smaller than `tile_px` is one window, the whole (aligned) image: exactly one
untiled pass. Because the cores carry a full margin of context, per-pixel blending is not
needed: the output equals an untiled pass up to the (small) influence of context beyond the
margin (exactly for a model without normalisation layers whose receptive field fits in the
margin; tested). GroupNorm layers normalise over a whole window, so a window's statistics
enter: use windows at least as large as the training images (the default 512 px is 2× wse2te's
256).

Window origins are multiples of the U-Net's down-sampling factor, so every window sees the same
pooling grid as an untiled pass. Test-time augmentation (`tta=True`) averages the class
probabilities over the 8 symmetries of the square (the lattice itself is not 8-fold symmetric;
this averages the network's own orientation errors).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.evaluation import decode_defects


@dataclasses.dataclass(frozen=True)
class TileDetections:
    """Detections of one image in model pixels: points (N, 2) (row, col), classes (N,) registry
    ids, scores (N,) defect probability, class_probs (N, K) probabilities of the K defect classes
    (column k is registry id k + 1; see `stemjax.evaluation.decode`)."""

    points: np.ndarray
    classes: np.ndarray
    scores: np.ndarray
    class_probs: np.ndarray

    def select(self, keep: np.ndarray) -> TileDetections:
        """The detections where boolean (or index) `keep` selects."""
        return TileDetections(
            self.points[keep], self.classes[keep], self.scores[keep], self.class_probs[keep]
        )


def _dihedral(x, k: int, inverse: bool = False):
    """The k-th of the 8 symmetries of the square on axes (1, 2) of x (B, H, W, ...)."""
    if not inverse:
        x = jnp.flip(x, axis=2) if k >= 4 else x
        return jnp.rot90(x, k % 4, axes=(1, 2))
    x = jnp.rot90(x, -(k % 4), axes=(1, 2))
    return jnp.flip(x, axis=2) if k >= 4 else x


def tile_logits(model, tiles, tta: bool = False):
    """Logits (B, T, T, C) of normalised tiles (B, T, T); with TTA the log of the mean class
    probabilities over the 8 symmetries."""
    if not tta:
        return model.logits(tiles)
    probs = 0.0
    for k in range(8):
        logits = model.logits(_dihedral(tiles, k))
        probs = probs + jax.nn.softmax(_dihedral(logits, k, inverse=True), axis=-1)
    return jnp.log(probs / 8.0 + 1e-12)


def tile_grid(shape, tile_px: int, margin_px: int, align: int):
    """Windows covering an image of `shape` (H, W) whose size is already a multiple of `align`.

    Returns (windows, window shape): each window is ((row0, col0), (r_lo, r_hi), (c_lo, c_hi)):
    its top-left pixel and the core it owns, all in image pixels. Cores start every
    tile_px − 2·margin_px; a window starts `margin_px` before its core and is moved inwards
    where it would leave the image. An axis shorter than tile_px is one window of its length.
    """
    core = tile_px - 2 * margin_px
    if core <= 0 or core % align or margin_px % align:
        raise ValueError(
            f"tile_px={tile_px} and margin_px={margin_px}: the core (tile − 2·margin) must be "
            f"positive, and core and margin multiples of the model's down-sampling factor {align}"
        )
    if any(n % align for n in shape):
        raise ValueError(f"image shape {tuple(shape)} must be a multiple of {align}")

    def axis(n):
        if n <= tile_px:
            return [(0, (0, n))], n
        starts = range(0, n, core)
        return [
            (min(max(a - margin_px, 0), n - tile_px), (a, min(a + core, n))) for a in starts
        ], tile_px

    (rows, th), (cols, tw) = axis(shape[0]), axis(shape[1])
    windows = [((r0, c0), rr, cc) for r0, rr in rows for c0, cc in cols]
    return windows, (th, tw)


def aligned_shape(shape, align: int) -> tuple[int, int]:
    """(H, W) rounded up to a multiple of `align` (the network's down-sampling factor)."""
    return tuple(-(-int(n) // align) * align for n in shape)


def _window_batches(array, windows, window_shape, batch_tiles: int):
    """(windows, stacked crops (batch_tiles, th, tw, ...)) of `array` for each run of
    `batch_tiles` windows; the last batch repeats its last crop, so every batch has one shape
    (one compilation)."""
    th, tw = window_shape
    for start in range(0, len(windows), batch_tiles):
        chunk = windows[start : start + batch_tiles]
        crops = np.stack([array[r : r + th, c : c + tw] for (r, c), _, _ in chunk])
        if len(chunk) < batch_tiles:
            crops = np.concatenate([crops, np.repeat(crops[-1:], batch_tiles - len(chunk), 0)])
        yield chunk, crops


def logit_map(
    model,
    image: np.ndarray,
    *,
    tile_px: int = 512,
    margin_px: int = 64,
    batch_tiles: int = 4,
    tta: bool = False,
    out: np.ndarray | None = None,
    progress=None,
) -> np.ndarray:
    """The network's logits (Ha, Wa, C) float32 for one normalised image (H, W) at the model's
    pixel size, each pixel from the window whose core holds it. (Ha, Wa) = `aligned_shape`;
    rows / columns beyond (H, W) are the reflect padding's. out: an array of that shape to fill
    (e.g. a memory-mapped file), else a new one. progress: optional callable(n_windows_done).
    """
    image = np.asarray(image, np.float32)
    align = model.downsample_factor
    h, w = image.shape
    aligned = aligned_shape(image.shape, align)
    source = np.pad(image, ((0, aligned[0] - h), (0, aligned[1] - w)), mode="reflect")
    windows, (th, tw) = tile_grid(aligned, tile_px, margin_px, align)
    if out is None:
        out = np.empty((*aligned, model.registry.num_classes), np.float32)
    for chunk, tiles in _window_batches(source, windows, (th, tw), batch_tiles):
        logits = np.asarray(jax.device_get(tile_logits(model, jnp.asarray(tiles), tta)))
        for b, ((r, c), (r_lo, r_hi), (c_lo, c_hi)) in enumerate(chunk):
            out[r_lo:r_hi, c_lo:c_hi] = logits[b, r_lo - r : r_hi - r, c_lo - c : c_hi - c]
        if progress is not None:
            progress(len(chunk))
    return out


def decode_map(
    model,
    logits: np.ndarray,
    image_shape,
    *,
    threshold: float,
    tile_px: int = 512,
    margin_px: int = 64,
    batch_tiles: int = 4,
    min_distance_px: int | None = None,
    max_detections: int | None = None,
    logit_offsets=None,
    return_probabilities: bool = False,
):
    """Defects of one image from its stitched logits (`logit_map`), decoded window by window
    (`stemjax.evaluation.decode_defects`) on the same windows; a peak belongs to the window
    whose core holds it, and peak suppression near a core's edge sees the neighbouring cores'
    logits, as in an untiled pass. image_shape: the image's (H, W); peaks in the alignment
    padding are dropped. logit_offsets: (C,) added to every pixel's logits (the prior shift,
    `TrainedModel.logit_offsets`); None: none. Returns (TileDetections, p_def map (H, W) or None).
    """
    align = model.downsample_factor
    h, w = image_shape
    min_distance_px = model.min_distance_px if min_distance_px is None else int(min_distance_px)
    if max_detections is None:  # every peak the suppression window allows: never truncates
        max_detections = (-(-tile_px // (min_distance_px + 1))) ** 2
    windows, (th, tw) = tile_grid(logits.shape[:2], tile_px, margin_px, align)
    offsets = None if logit_offsets is None else jnp.asarray(logit_offsets, jnp.float32)
    prob_map = np.zeros((h, w), np.float32) if return_probabilities else None

    points, classes, scores, class_probs = [], [], [], []
    for chunk, block in _window_batches(logits, windows, (th, tw), batch_tiles):
        block = jnp.asarray(block)
        if offsets is not None:
            block = block + offsets
        det = jax.device_get(
            decode_defects(
                block,
                threshold=threshold,
                min_distance_px=min_distance_px,
                max_detections=max_detections,
            )
        )
        if return_probabilities:
            p_def = np.asarray(1.0 - jax.nn.softmax(block, axis=-1)[..., 0])
        for b, ((r, c), (r_lo, r_hi), (c_lo, c_hi)) in enumerate(chunk):
            valid = det.valid[b]
            if valid.sum() == max_detections:
                raise RuntimeError(
                    f"tile at ({r}, {c}) px hit max_detections={max_detections}; raise it"
                )
            p = det.points[b][valid] + np.array([r, c], np.float32)  # image coordinates
            r_hi, c_hi = min(r_hi, h), min(c_hi, w)  # the alignment padding is not owned
            keep = (
                (p[:, 0] >= r_lo - 0.5)
                & (p[:, 0] < r_hi - 0.5)
                & (p[:, 1] >= c_lo - 0.5)
                & (p[:, 1] < c_hi - 0.5)
            )
            points.append(p[keep])
            classes.append(det.classes[b][valid][keep])
            scores.append(det.scores[b][valid][keep])
            class_probs.append(det.class_probs[b][valid][keep])
            if return_probabilities:
                prob_map[r_lo:r_hi, c_lo:c_hi] = p_def[b, r_lo - r : r_hi - r, c_lo - c : c_hi - c]
    points = np.concatenate(points).astype(np.float32).reshape(-1, 2)
    out = TileDetections(
        points=points,
        classes=np.concatenate(classes).astype(np.int32),
        scores=np.concatenate(scores).astype(np.float32),
        class_probs=np.concatenate(class_probs).astype(np.float32),  # (N, K) even for N = 0
    )
    return out, prob_map


def predict_tiles(
    model,
    image: np.ndarray,
    *,
    tile_px: int = 512,
    margin_px: int = 64,
    batch_tiles: int = 4,
    tta: bool = False,
    threshold: float | None = None,
    min_distance_px: int | None = None,
    max_detections: int | None = None,
    logit_offsets=None,
    return_probabilities: bool = False,
    progress=None,
):
    """Detect defects in one normalised image (H, W) at the model's pixel size: `logit_map`
    then `decode_map`.

    threshold: p_def threshold (default: `model.threshold_for(tta)`). logit_offsets: (C,) added
    to every pixel's logits before decoding (the prior shift, `TrainedModel.logit_offsets`);
    None: none.

    Returns (TileDetections, probability map (H, W) of p_def or None). An image no larger than
    tile_px is one window: one pass of the network over the whole image. progress: optional
    callable(n_tiles_done) for a progress bar.
    """
    threshold = model.threshold_for(tta) if threshold is None else float(threshold)
    tiles = dict(tile_px=tile_px, margin_px=margin_px, batch_tiles=batch_tiles)
    logits = logit_map(model, image, tta=tta, progress=progress, **tiles)
    return decode_map(
        model,
        logits,
        np.shape(image),
        threshold=threshold,
        min_distance_px=min_distance_px,
        max_detections=max_detections,
        logit_offsets=logit_offsets,
        return_probabilities=return_probabilities,
        **tiles,
    )
