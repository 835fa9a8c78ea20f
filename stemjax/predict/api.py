"""Micrographs → defect table, lattice sites and per-image fields (the notebook API).

    model = load_model("experiments/wse2te/model")
    result = predict(model, ["a.dm4", "b.tif"])            # or arrays with pixel_size_A=
    result.defects        # one row per defect (schema below)
    result.concentrations()                               # per class, per site and per nm²

Coordinates in the tables: x along columns (axis 1), y along rows (axis 0), origin at the
centre of the top-left pixel, in pixels of the micrograph AS GIVEN (x_px, y_px) and in Å
(x_A = x_px · pixel size). Images are resampled to the model's training pixel size and
normalised exactly as training images (`stemjax.corrupt.normalise_image`) before inference;
positions are mapped back.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stemjax.corrupt import normalise_image
from stemjax.io import (
    Micrograph,
    MicrographError,
    as_micrograph,
    read_micrograph,
    resample_to_pixel_size,
)
from stemjax.predict.inference import aligned_shape, decode_map, logit_map
from stemjax.predict.model import ESTIMATE
from stemjax.predict.sites import columns_and_classes, complete_sites, lattice_orientation

log = logging.getLogger(__name__)

DEFECT_COLUMNS = (
    "image_id", "x_px", "y_px", "x_A", "y_A", "class_id", "class_name", "sublattice", "score",
    "network_class_name",
)  # fmt: skip
SITE_COLUMNS = ("image_id", "x_px", "y_px", "x_A", "y_A", "sublattice")
EDGE_A = 0.6
"""Default edge band (Å): defects and sites closer than this to a micrograph edge are dropped.
A column centred there is partly outside the image; most false detections of the shipped wse2te
model sat in it (experiments/wse2te/REPORT.md, threshold_study.json: on validation images its
precision at threshold 0.5 rises from 0.963 to 0.992, and gains flatten beyond this width)."""
PIXEL_SIZE_RANGE = (0.5, 2.0)
"""Accepted micrograph pixel size relative to the model's (beyond it, resampling would invent or
throw away most of the information the model was trained on)."""


@dataclasses.dataclass
class Prediction:
    """Result of `predict` over one or more micrographs.

    defects: DataFrame, one row per defect, columns DEFECT_COLUMNS (score = defect probability
    at the peak, 0..1; sublattice of the class; network_class_name: the network's own class,
    which differs from class_name where the sublattice-consistency step moved it). sites:
    DataFrame of all lattice sites (atomic columns, including those of defects), columns
    SITE_COLUMNS. fields: DataFrame indexed by
    image_id with height_px, width_px, pixel_size_A (Å/px), edge_px (the dropped border band,
    micrograph px: per-nm² densities use the area inside it), path, lattice_angle_deg (direction
    of the metal → chalcogen bonds in the image, from +x towards +y, modulo 120°; NaN without a
    lattice) and lattice_coherence (0–1, see `sites.lattice_orientation`). registry: the model's
    classes.
    """

    defects: pd.DataFrame
    sites: pd.DataFrame
    fields: pd.DataFrame
    registry: object
    images: dict = dataclasses.field(default_factory=dict, repr=False)

    def concentrations(self, **kwargs) -> pd.DataFrame:
        """Per-class concentrations (see `stemjax.analysis.concentrations`)."""
        from stemjax.analysis import concentrations

        return concentrations(self.defects, self.sites, self.registry, self.fields, **kwargs)

    def site_rates(self, pseudo_count: float = 0.5) -> dict[str, float]:
        """Per-site rate of every defect class over all micrographs, (count + pseudo_count) /
        (sites of its sublattice + 2·pseudo_count) (Jeffreys' prior: a class never seen keeps a
        small positive rate), as `predict(..., site_prior=)` takes it."""
        table = self.concentrations().drop(index="all")
        rates = (table["count"] + pseudo_count) / (table["n_sites"] + 2 * pseudo_count)
        for sub, total in rates.groupby(table["sublattice"]).sum().items():
            if total >= 1:
                on = table[table["sublattice"] == sub]
                raise ValueError(
                    f"site rates: {int(on['count'].sum())} defects on {int(on['n_sites'].iloc[0])} "
                    f"{sub} sites (rate sum {total:.3g} ≥ 1): more defects than sites, so the "
                    f"detections cannot be read as per-site rates"
                )
        return {str(k): float(v) for k, v in rates.items()}

    def class_averages(self, frame: str = "lattice", **kwargs):
        """Class-averaged images of isolated defects (see `stemjax.analysis.class_averages`);
        needs the images (kept unless predict(..., keep_images=False)).

        frame: 'lattice' (default) rotates each micrograph's crops by its lattice orientation
        (`fields.lattice_angle_deg`) so the metal → chalcogen bonds run along +x, 120° and
        240° in every average, whatever the scan rotation of each micrograph; 'image' keeps
        each micrograph's own axes (only meaningful when they all share one orientation).
        """
        from stemjax.analysis import class_averages

        if not self.images:
            raise ValueError("class_averages needs the images: predict(..., keep_images=True)")
        if frame not in ("lattice", "image"):
            raise ValueError(f"frame = {frame!r} must be 'lattice' or 'image'")
        if frame == "lattice":  # class_averages names an image with defects but no angle
            angle = self.fields["lattice_angle_deg"]
            kwargs["rotation_rad"] = {str(k): np.deg2rad(v) for k, v in angle.items()}
        return class_averages(self.images, self.defects, classes=self.registry, **kwargs)


def _interior(shape, edge_px: float):
    """Mask function: points (n, 2) (row, col) px at least `edge_px` from the outermost pixel
    centres (0 and size − 1) of an image of `shape`, inward; edge_px 0 keeps every point."""
    hi = np.asarray(shape, np.float64) - 1.0 - edge_px
    if edge_px <= 0:
        return lambda p: np.ones(len(p), bool)
    return lambda p: np.all((np.asarray(p) >= edge_px) & (np.asarray(p) <= hi), axis=1)


def _as_micrographs(inputs, pixel_size_A, frame, image_ids) -> list[tuple[str, Micrograph]]:
    if isinstance(inputs, str | Path | np.ndarray | Micrograph):
        inputs = [inputs]
    items = list(inputs)
    if image_ids is not None and len(image_ids) != len(items):
        raise ValueError(f"image_ids has {len(image_ids)} names for {len(items)} inputs")
    out = []
    for i, item in enumerate(items):
        if isinstance(item, Micrograph):
            mic = item
        elif isinstance(item, np.ndarray):
            if pixel_size_A is None:
                raise MicrographError(f"array input {i}: pass pixel_size_A=… (Å/px)")
            mic = as_micrograph(item, pixel_size_A=pixel_size_A, name=f"array input {i}")
        else:
            mic = read_micrograph(item, pixel_size_A=pixel_size_A, frame=frame)
        if image_ids is not None:
            name = str(image_ids[i])
        elif mic.path is not None:
            name = Path(mic.path).stem
        else:
            name = f"image{i}"
        out.append((name, mic))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate image ids {names}; pass image_ids=…")
    return out


def predict(
    model,
    inputs: str | Path | np.ndarray | Micrograph | Iterable,
    *,
    pixel_size_A: float | None = None,
    frame: int | None = None,
    image_ids: Sequence[str] | None = None,
    tile_px: int = 512,
    margin_px: int = 64,
    batch_tiles: int = 4,
    tta: bool = False,
    threshold: float | None = None,
    site_prior=None,
    max_detections: int | None = None,
    edge_A: float = EDGE_A,
    keep_images: bool = True,
    sublattice_consistent: bool = True,
    progress: bool = True,
) -> Prediction:
    """Find, classify and locate every defect (and every lattice site) in micrographs.

    inputs: file path(s) (.dm3/.dm4/.emd/.tif/.tiff/.npy), NumPy array(s) (H, W) or
    `Micrograph`s. pixel_size_A: Å/px, required for arrays and files without calibration
    (overrides the file's). frame: frame of a stack. tile_px / margin_px / batch_tiles: tiled
    inference (see `stemjax.predict.inference`). tta: 8-fold symmetry test-time augmentation.
    threshold: defect probability threshold (default: the model's, `trainer.decode_threshold`,
    or with tta `trainer.decode_threshold_tta`). site_prior: the defect rates
    expected in these micrographs, as the name of a prior in the model's config ('eval': the
    realistic rates, 'train': the training rates, i.e. no shift), {class name: per-site
    concentration}, or 'estimate': the rates of a first pass at the training odds
    (`Prediction.site_rates`, pooled over all inputs: call once per sample when samples
    differ in composition; the network runs once and its logit maps are decoded twice, kept
    meanwhile in a temporary folder: C × 4 bytes per pixel at the model's pixel size, 2.4 GB
    for a million-atom wse2te dataset; set TMPDIR to move it); the network's
    class odds are moved from its training rates to these (`stemjax.evaluation.prior_shift`).
    Default: the model's `trainer.decode_prior`. A rare class oversampled in training otherwise
    keeps its training odds. max_detections: per tile
    (default: the most peaks the decoding's suppression window allows). edge_A: defects and
    sites closer than this (Å) to the micrograph's outermost pixel centres are dropped from both
    tables (so per-site concentrations stay consistent; 0 keeps everything; see `EDGE_A`).
    keep_images: keep the resampled normalised images in the result (class averages).
    sublattice_consistent: give each defect the most probable class of the sublattice its site
    geometrically sits on (`sites.site_sublattices`, `sites.restrict_to_sublattice`); the
    network alone can confuse W with Se2 columns at strong defocus and low dose.
    """
    mics = _as_micrographs(inputs, pixel_size_A, frame, image_ids)
    site_prior = model.decode_prior if site_prior is None else site_prior
    if edge_A < 0:
        raise ValueError(f"edge_A must be >= 0 Å, got {edge_A}")
    # logit maps live in memory-mapped files, so memory stays bounded by the tile batch
    with tempfile.TemporaryDirectory(prefix="stemjax-logits-") as cache:
        run = functools.partial(
            _predict_all,
            model,
            mics,
            cache=cache,
            tile_px=tile_px,
            margin_px=margin_px,
            batch_tiles=batch_tiles,
            tta=tta,
            threshold=model.threshold_for(tta) if threshold is None else float(threshold),
            max_detections=max_detections,
            edge_A=edge_A,
            sublattice_consistent=sublattice_consistent,
            progress=progress,
        )
        if site_prior != ESTIMATE:
            return run(model.logit_offsets(site_prior), keep_images=keep_images)
        # the network runs once; its logit maps wait on disk for the second decoding
        first = run(model.logit_offsets(model.train_prior), keep_images=False, keep_logits=True)
        rates = first.site_rates()
        log.info("site_prior='estimate': rates from a first pass at the training odds: %s", rates)
        return run(model.logit_offsets(rates), keep_images=keep_images)


def _logit_file(path: Path, shape) -> np.memmap:
    """A float32 .npy memory map of `shape` at `path`, its disk space reserved up front, so a
    full disk fails here with a clear error instead of killing the process (SIGBUS) later."""
    out = np.lib.format.open_memmap(path, "w+", np.float32, shape)
    if hasattr(os, "posix_fallocate"):  # Linux; elsewhere the file stays sparse
        size = path.stat().st_size
        with open(path, "r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError as err:
                raise OSError(
                    f"predict: no room for a {size / 1e6:.0f} MB logit map in {path.parent} "
                    f"({err.strerror}); set TMPDIR to a folder with more free space"
                ) from err
    return out


def _predict_all(
    model,
    mics,
    offsets,
    *,
    tile_px,
    margin_px,
    batch_tiles,
    tta,
    threshold,
    max_detections,
    edge_A,
    keep_images,
    sublattice_consistent,
    progress,
    cache,
    keep_logits=False,
) -> Prediction:
    """`predict` over (image id, Micrograph) pairs with fixed logit offsets. cache: a folder
    for the logit maps (`inference.logit_map`), one memory-mapped .npy file per micrograph,
    read where present (the network does not run again), else written; removed after its
    decoding unless keep_logits."""
    from tqdm.auto import tqdm

    registry = model.registry
    names = np.array(registry.names, dtype=object)
    subs = registry.sublattice_names()
    tiles = dict(tile_px=tile_px, margin_px=margin_px, batch_tiles=batch_tiles)
    defects, sites, fields, images = [], [], [], {}
    bar = tqdm(total=len(mics), desc="images", disable=not progress, unit="img")
    for i, (image_id, mic) in enumerate(mics):
        where = mic.path or image_id
        ratio = mic.pixel_size_A / model.pixel_size_A
        if not PIXEL_SIZE_RANGE[0] <= ratio <= PIXEL_SIZE_RANGE[1]:
            raise MicrographError(
                f"{where}: pixel size {mic.pixel_size_A:.4g} Å/px is {ratio:.2f}× the model's "
                f"{model.pixel_size_A:.4g} Å/px (accepted {PIXEL_SIZE_RANGE[0]}–"
                f"{PIXEL_SIZE_RANGE[1]}×); check the calibration or pass pixel_size_A=…"
            )
        img = resample_to_pixel_size(mic.image, mic.pixel_size_A, model.pixel_size_A)
        img = normalise_image(img)
        stored = Path(cache) / f"{i}.npy"
        if stored.exists():
            logits = np.load(stored, mmap_mode="r")
        else:
            shape = (*aligned_shape(img.shape, model.downsample_factor), registry.num_classes)
            logits = _logit_file(stored, shape)
            logit_map(model, img, tta=tta, out=logits, **tiles)
            logits.flush()
        det, _ = decode_map(
            model,
            logits,
            img.shape,
            threshold=threshold,
            max_detections=max_detections,
            logit_offsets=offsets,
            **tiles,
        )
        del logits
        if not keep_logits:
            stored.unlink()
        interior = _interior(img.shape, edge_A / model.pixel_size_A)
        det = det.select(interior(det.points))
        network_classes = det.classes
        col_pts, col_sub, classes = columns_and_classes(
            img,
            model.pixel_size_A,
            model.sublattice_brightness,
            det.points,
            det.classes,
            det.class_probs,
            registry,
            consistent=sublattice_consistent,
        )
        det = dataclasses.replace(det, classes=classes)
        site_pts, site_sub = complete_sites(
            col_pts, col_sub, det.points, subs[det.classes], snap_px=0.8 / model.pixel_size_A
        )
        keep = interior(site_pts)
        site_pts, site_sub = site_pts[keep], site_sub[keep]
        angle_rad, coherence = lattice_orientation(site_pts, site_sub, model.pixel_size_A)
        scale = model.pixel_size_A / mic.pixel_size_A  # model px → micrograph px
        defects.append(
            pd.DataFrame(
                {
                    "image_id": image_id,
                    "x_px": det.points[:, 1] * scale,
                    "y_px": det.points[:, 0] * scale,
                    "x_A": det.points[:, 1] * model.pixel_size_A,
                    "y_A": det.points[:, 0] * model.pixel_size_A,
                    "class_id": det.classes,
                    "class_name": names[det.classes],
                    "sublattice": subs[det.classes],
                    "score": det.scores,
                    "network_class_name": names[network_classes],
                },
                columns=list(DEFECT_COLUMNS),
            )
        )
        sites.append(
            pd.DataFrame(
                {
                    "image_id": image_id,
                    "x_px": site_pts[:, 1] * scale,
                    "y_px": site_pts[:, 0] * scale,
                    "x_A": site_pts[:, 1] * model.pixel_size_A,
                    "y_A": site_pts[:, 0] * model.pixel_size_A,
                    "sublattice": site_sub,
                },
                columns=list(SITE_COLUMNS),
            )
        )
        h, w = mic.image.shape
        fields.append(
            {
                "image_id": image_id,
                "height_px": h,
                "width_px": w,
                "pixel_size_A": mic.pixel_size_A,
                "edge_px": edge_A / mic.pixel_size_A,
                "path": str(mic.path) if mic.path else "",
                "lattice_angle_deg": np.rad2deg(angle_rad),
                "lattice_coherence": coherence,
            }
        )
        if keep_images:
            # class averages cut crops at the micrograph's own pixel size
            images[image_id] = (normalise_image(mic.image), mic.pixel_size_A)
        bar.update(1)
        bar.set_postfix(defects=sum(len(d) for d in defects), refresh=False)
    bar.close()
    return Prediction(
        defects=pd.concat(defects, ignore_index=True),
        sites=pd.concat(sites, ignore_index=True),
        fields=pd.DataFrame(fields).set_index("image_id"),
        registry=registry,
        images=images,
    )
