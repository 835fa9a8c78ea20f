"""Tiled U-Net inference on arbitrarily large normalised images, with bounded memory.

Overlap-tile scheme (Ronneberger et al. 2015): the image is cut into tiles of `tile_px` whose
central cores (tile minus `margin_px` per side) partition the image; each tile sees `margin_px`
of real context (reflect padding at the image border) around its core. The network and the
shared decoding (`stemjax.evaluation.decode_defects`) run on whole tiles; a detection is kept by
the one tile whose core contains it, so no defect is counted twice or lost at a seam, and the
optional probability map is assembled from the cores. Because the cores already carry a full
margin of context, per-pixel blending of overlapping predictions is not needed: the core
outputs equal those of an untiled pass up to the (small) influence of context beyond the margin
(exactly equal for a model without normalisation layers whose receptive field fits in the
margin; tested). GroupNorm layers normalise over a whole tile, so a tile's statistics enter:
use tiles at least as large as the training images (the default 512 px is 2× wse2te's 256).
Memory: a batch of tiles on the device, never the whole image's logits.

Tile origins are multiples of the U-Net's down-sampling factor, so every tile sees the same
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
    """Core origins (row, col) covering `shape` with cores of tile_px − 2·margin_px.

    Returns (origins list, core size, padded shape): cores tile the padded image of size
    ceil(shape / core)·core; tiles start at origin − margin in the image padded by margin.
    """
    core = tile_px - 2 * margin_px
    if core <= 0 or core % align or margin_px % align:
        raise ValueError(
            f"tile_px={tile_px} and margin_px={margin_px}: the core (tile − 2·margin) must be "
            f"positive, and core and margin multiples of the model's down-sampling factor {align}"
        )
    n_rows, n_cols = (max(1, -(-s // core)) for s in shape)
    origins = [(i * core, j * core) for i in range(n_rows) for j in range(n_cols)]
    return origins, core, (n_rows * core, n_cols * core)


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
    """Detect defects in one normalised image (H, W) at the model's pixel size.

    logit_offsets: (C,) added to every pixel's logits before decoding (the prior shift,
    `TrainedModel.logit_offsets`); None: none.

    Returns (TileDetections, probability map (H, W) of p_def or None). An image whose size is
    at most the core (tile_px − 2·margin_px) is one tile: one pass of the network over the image
    with its reflect-padded margin. progress: optional callable(n_tiles_done) for a progress bar.
    """
    image = np.asarray(image, np.float32)
    align = model.downsample_factor
    threshold = model.threshold_for(tta) if threshold is None else float(threshold)
    min_distance_px = model.min_distance_px if min_distance_px is None else int(min_distance_px)
    if max_detections is None:  # every peak the suppression window allows: never truncates
        max_detections = (-(-tile_px // (min_distance_px + 1))) ** 2
    h, w = image.shape
    origins, core, padded = tile_grid((h, w), tile_px, margin_px, align)
    pad = (
        (margin_px, padded[0] - h + margin_px),
        (margin_px, padded[1] - w + margin_px),
    )
    source = np.pad(image, pad, mode="reflect")  # NumPy reflects repeatedly past the edge
    offsets = None if logit_offsets is None else jnp.asarray(logit_offsets, jnp.float32)
    prob_map = np.zeros((h, w), np.float32) if return_probabilities else None

    points, classes, scores, class_probs = [], [], [], []
    for start in range(0, len(origins), batch_tiles):
        chunk = origins[start : start + batch_tiles]
        tiles = np.stack([source[r : r + tile_px, c : c + tile_px] for r, c in chunk])
        n_real = len(chunk)
        if n_real < batch_tiles:  # fixed batch shape: one compilation
            tiles = np.concatenate([tiles, np.repeat(tiles[-1:], batch_tiles - n_real, 0)])
        logits = tile_logits(model, jnp.asarray(tiles), tta)
        if offsets is not None:
            logits = logits + offsets
        det = jax.device_get(
            decode_defects(
                logits,
                threshold=threshold,
                min_distance_px=min_distance_px,
                max_detections=max_detections,
            )
        )
        if return_probabilities:
            p_def = np.asarray(1.0 - jax.nn.softmax(logits, axis=-1)[..., 0])
        for b, (r, c) in enumerate(chunk):
            valid = det.valid[b]
            if valid.sum() == max_detections:
                raise RuntimeError(
                    f"tile at ({r}, {c}) px hit max_detections={max_detections}; raise it"
                )
            p = det.points[b][valid] - margin_px  # core coordinates
            keep = np.all((p >= -0.5) & (p < core - 0.5), axis=1)
            p = p[keep] + np.array([r, c], np.float32)
            inside = (p[:, 0] < h - 0.5) & (p[:, 1] < w - 0.5)
            points.append(p[inside])
            classes.append(det.classes[b][valid][keep][inside])
            scores.append(det.scores[b][valid][keep][inside])
            class_probs.append(det.class_probs[b][valid][keep][inside])
            if return_probabilities:
                rows, cols = min(core, h - r), min(core, w - c)
                block = p_def[b, margin_px : margin_px + rows, margin_px : margin_px + cols]
                prob_map[r : r + rows, c : c + cols] = block
        if progress is not None:
            progress(n_real)
    points = np.concatenate(points).astype(np.float32).reshape(-1, 2)
    out = TileDetections(
        points=points,
        classes=np.concatenate(classes).astype(np.int32),
        scores=np.concatenate(scores).astype(np.float32),
        class_probs=np.concatenate(class_probs).astype(np.float32),  # (N, K) even for N = 0
    )
    return out, prob_map
