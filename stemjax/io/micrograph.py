"""Read real micrographs (DM3/DM4, EMD, TIFF, NPY) into one validated form for prediction.

Every reader ends in a `Micrograph`: a 2-D float32 image (rows = y = axis 0, columns = x =
axis 1, top-left pixel first) and its square pixel size in Å/px. Pixel sizes come from the
file's calibration (DM/EMD axis scales, ImageJ / OME / TIFF resolution tags) unless the caller
passes `pixel_size_A`; a file without one must get it explicitly — a guessed pixel size would
silently put the image at the wrong scale for a network trained at a fixed Å/px.

Every bad input raises `MicrographError` (a `ValueError`) whose message starts with the file
path and says what was wrong and what was expected.
"""

from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import scipy.ndimage

__all__ = [
    "MIN_SIZE_PX",
    "SUPPORTED_SUFFIXES",
    "Micrograph",
    "MicrographError",
    "as_micrograph",
    "read_micrograph",
    "resample_to_pixel_size",
    "write_tif",
]

logger = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".dm3", ".dm4", ".emd", ".tif", ".tiff", ".npy")
MIN_SIZE_PX = 16  # smallest accepted image side, px
_PIXEL_SIZE_RTOL = 0.01  # explicit vs file pixel size, and x vs y, agree within 1 %

# Length units → Å. Keys are lower-cased; both µ (U+00B5 micro sign) and μ (U+03BC mu) occur.
_UNIT_TO_A = {
    "m": 1e10,
    "meter": 1e10,
    "metre": 1e10,
    "cm": 1e8,
    "mm": 1e7,
    "µm": 1e4,
    "μm": 1e4,
    "um": 1e4,
    "\\u00b5m": 1e4,
    "micron": 1e4,
    "microns": 1e4,
    "micrometer": 1e4,
    "micrometre": 1e4,
    "nm": 10.0,
    "nanometer": 10.0,
    "nanometre": 10.0,
    "å": 1.0,
    "a": 1.0,
    "\\u00c5": 1.0,
    "ang": 1.0,
    "angstrom": 1.0,
    "angstroms": 1.0,
    "ångström": 1.0,
    "pm": 0.01,
    "picometer": 0.01,
    "picometre": 0.01,
}


class MicrographError(ValueError):
    """A micrograph file or array that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class Micrograph:
    """A validated 2-D micrograph.

    image: (H, W) float32, finite, non-constant, at least 16×16 px; rows = y (axis 0),
        columns = x (axis 1), top-left pixel first.
    pixel_size_A: Å per pixel (square pixels), positive and finite.
    path: source file (None for arrays). frame: index into a stack (None for single images).
    metadata: small dict of what was read (format, original dtype/shape, units, title, ...).
    """

    image: np.ndarray
    pixel_size_A: float
    path: str | None = None
    frame: int | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) in px."""
        return self.image.shape

    @property
    def extent_A(self) -> tuple[float, float]:
        """Field of view (height, width) in Å."""
        return (self.image.shape[0] * self.pixel_size_A, self.image.shape[1] * self.pixel_size_A)


# --------------------------------------------------------------------------------------------
# Validation shared by files and arrays


def _check_pixel_size(label: str, pixel_size_A: Any, what: str = "pixel_size_A") -> float:
    try:
        value = float(pixel_size_A)
    except (TypeError, ValueError) as e:
        raise MicrographError(
            f"{label}: {what} must be a number (Å/px), got {pixel_size_A!r}"
        ) from e
    if not math.isfinite(value) or value <= 0.0:
        raise MicrographError(
            f"{label}: {what} must be positive and finite (Å/px), got {pixel_size_A!r}"
        )
    return value


def _to_float32(label: str, image: Any) -> np.ndarray:
    """Real numeric array → float32; complex, structured (RGB DM) and object arrays rejected."""
    array = np.asarray(image)
    dtype = array.dtype
    if np.issubdtype(dtype, np.complexfloating):
        raise MicrographError(
            f"{label}: complex-valued image (dtype {dtype}); expected a real intensity image"
        )
    if dtype.fields is not None:
        raise MicrographError(
            f"{label}: structured dtype {dtype} (e.g. RGB); expected a grayscale intensity image"
        )
    if not (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        raise MicrographError(f"{label}: unsupported dtype {dtype}; expected a numeric image")
    return np.asarray(array, dtype=np.float32)


def _check_image(label: str, image: np.ndarray) -> np.ndarray:
    """Checks of a 2-D float32 image: size, finiteness, non-constant."""
    if image.ndim != 2:
        raise MicrographError(
            f"{label}: expected a 2-D image (H, W), got an array of shape {image.shape}"
        )
    h, w = image.shape
    if h < MIN_SIZE_PX or w < MIN_SIZE_PX:
        raise MicrographError(
            f"{label}: image is {h}×{w} px, too small; need at least {MIN_SIZE_PX}×{MIN_SIZE_PX} px"
        )
    finite = np.isfinite(image)
    if not finite.all():
        bad = np.argwhere(~finite)
        r, c = (int(v) for v in bad[0])
        raise MicrographError(
            f"{label}: {len(bad)} non-finite pixels (NaN/Inf), first at (row, col) = ({r}, {c})"
        )
    if image.min() == image.max():
        raise MicrographError(
            f"{label}: image is constant (all pixels = {float(image.flat[0])!r}); "
            "nothing to analyse"
        )
    return np.ascontiguousarray(image)


def as_micrograph(image, *, pixel_size_A: float, name: str = "array") -> Micrograph:
    """Validate a NumPy (H, W) image with its pixel size (Å/px) into a `Micrograph`.

    Integer/bool/float images become float32; complex, non-2-D, NaN/Inf, constant or smaller
    than 16×16 px images raise `MicrographError` (messages start with `name`).
    """
    px = _check_pixel_size(name, pixel_size_A)
    original = np.asarray(image)
    data = _check_image(name, _to_float32(name, original))
    meta = {
        "format": "array",
        "original_dtype": str(original.dtype),
        "original_shape": tuple(original.shape),
        "pixel_size_source": "explicit",
    }
    return Micrograph(image=data, pixel_size_A=px, path=None, frame=None, metadata=meta)


# --------------------------------------------------------------------------------------------
# Units and axes


def _unit_factor_A(units: Any) -> float | None:
    """Å per `units` for a length unit string, else None (px, 1/nm, s, '', ...)."""
    if units is None:
        return None
    key = str(units).strip().lower().replace(" ", "")
    return _UNIT_TO_A.get(key)


def _pixel_size_from_scales(
    scales: tuple[float, float], units: tuple[Any, Any]
) -> tuple[tuple[float, float] | None, str]:
    """(y, x) axis scales + units → ((x, y) Å/px or None, reason when None)."""
    factors = [_unit_factor_A(u) for u in units]
    if any(f is None for f in factors):
        shown = ", ".join(repr(str(u) if u is not None else "") for u in units)
        return None, f"axis units ({shown}) are not lengths"
    py, px = (float(s) * f for s, f in zip(scales, factors, strict=True))
    return (px, py), ""


def _pick_image_signal(label: str, signals: list[dict]) -> dict:
    """Choose the one 2-D image (or image stack) among rsciio signal dicts."""
    images = []
    others = []
    for s in signals:
        title = str(s.get("metadata", {}).get("General", {}).get("title", "") or "")
        layout = _image_layout(s)
        (images if layout is not None else others).append((title, s, layout))
    if not images:
        shown = ", ".join(f"{t!r} {np.shape(s['data'])}" for t, s, _ in others) or "none"
        raise MicrographError(
            f"{label}: no 2-D image signal in the file (signals: {shown}); "
            "expected a 2-D image or an image stack"
        )
    if len(images) == 1:
        return images[0][1] | {"_layout": images[0][2], "_title": images[0][0]}
    for pattern in (r"haadf", r"adf"):
        hits = [im for im in images if re.search(pattern, im[0], re.IGNORECASE)]
        if len(hits) == 1:
            return hits[0][1] | {"_layout": hits[0][2], "_title": hits[0][0]}
        if len(hits) > 1:
            break
    titles = ", ".join(repr(t) for t, _, _ in images)
    raise MicrographError(
        f"{label}: {len(images)} image signals ({titles}) and no single HAADF/ADF one to choose; "
        "export the wanted signal to its own file"
    )


def _image_layout(signal: dict) -> tuple[int | None, int, int] | None:
    """(frame axis or None, y axis, x axis) of an rsciio signal that is an image or image stack.

    rsciio's NCEM EMD reader marks every axis `navigate=False`, so for 3-D data without a
    navigation flag the frame axis is the one whose unit is not a length (else axis 0).
    Spectra, spectrum images (1 signal axis) and 4-D data are not images → None.
    """
    shape = np.shape(signal["data"])
    axes = signal.get("axes", [])
    if len(axes) != len(shape):
        axes = [{"navigate": False, "units": ""} for _ in shape]
    nav = [i for i, a in enumerate(axes) if a.get("navigate", False)]
    sig = [i for i, a in enumerate(axes) if not a.get("navigate", False)]
    if len(shape) == 2:
        return (None, 0, 1) if len(sig) == 2 else None
    if len(shape) == 3:
        if len(sig) == 2 and len(nav) == 1:
            return (nav[0], sig[0], sig[1])
        if len(sig) == 3:
            non_length = [i for i, a in enumerate(axes) if _unit_factor_A(a.get("units")) is None]
            frame_axis = non_length[0] if len(non_length) == 1 else 0
            rest = [i for i in range(3) if i != frame_axis]
            return (frame_axis, rest[0], rest[1])
    return None


# --------------------------------------------------------------------------------------------
# Format readers: each returns (array (H, W) or (N, H, W), the file's (x, y) pixel size in Å
# or None, the reason when None, metadata dict)


def _read_rsciio(path: Path, label: str, fmt: str):
    try:
        if fmt == "emd":
            from rsciio.emd import file_reader
        else:
            from rsciio.digitalmicrograph import file_reader
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise MicrographError(
            f"{label}: reading .{fmt} needs the 'rosettasciio' package"
            + (" and 'h5py'" if fmt == "emd" else "")
            + f" ({e})"
        ) from e
    # Velox: load images only (skips EDS spectrum images, which are slow and need `sparse`);
    # the NCEM reader ignores select_type.
    kwargs = {"select_type": "image"} if fmt == "emd" else {}
    try:
        signals = file_reader(str(path), lazy=False, **kwargs)
    except Exception as e:
        raise MicrographError(
            f"{label}: could not read as a {fmt.upper()} file ({type(e).__name__}: {e})"
        ) from e
    if isinstance(signals, dict):
        signals = [signals]
    chosen = _pick_image_signal(label, list(signals or []))
    frame_axis, y_axis, x_axis = chosen["_layout"]
    data = np.asarray(chosen["data"])
    axes = chosen["axes"]
    order = ([frame_axis] if frame_axis is not None else []) + [y_axis, x_axis]
    data = np.transpose(data, order)
    ya, xa = axes[y_axis], axes[x_axis]
    units = (ya.get("units"), xa.get("units"))
    scales = (float(ya.get("scale", 1.0)), float(xa.get("scale", 1.0)))
    px, reason = _pixel_size_from_scales(scales, units)
    meta = {
        "format": "emd" if fmt == "emd" else path.suffix.lower().lstrip("."),
        "title": chosen["_title"],
        "units": tuple(str(u) for u in units),
        "scales": scales,
        "n_signals": len(signals),
    }
    return data, px, reason, meta


def _imagej_pixel_size(tif, page) -> tuple[tuple[float, float] | None, str | None]:
    ij = tif.imagej_metadata or {}
    unit = ij.get("unit")
    if unit is None:
        return None, None
    factor = _unit_factor_A(unit)
    if factor is None:
        return None, f"ImageJ unit {unit!r} is not a length"
    res = page.resolution  # pixels per unit
    if not res or res[0] <= 0 or res[1] <= 0:
        return None, "ImageJ unit set but no resolution"
    return (factor / res[0], factor / res[1]), str(unit)


def _ome_pixel_size(tif) -> tuple[tuple[float, float] | None, str | None]:
    if not tif.is_ome or not tif.ome_metadata:
        return None, None
    try:
        root = ET.fromstring(tif.ome_metadata)
    except ET.ParseError:
        return None, None
    pixels = next((el for el in root.iter() if el.tag.endswith("Pixels")), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None, None
    sx = float(pixels.attrib["PhysicalSizeX"])
    sy = float(pixels.attrib.get("PhysicalSizeY", sx))
    ux = pixels.attrib.get("PhysicalSizeXUnit", "µm")  # OME default unit is µm
    uy = pixels.attrib.get("PhysicalSizeYUnit", ux)
    fx, fy = _unit_factor_A(ux), _unit_factor_A(uy)
    if fx is None or fy is None:
        return None, None
    return (sx * fx, sy * fy), ux


def _read_tif(path: Path, label: str):
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            data = series.asarray()
            axes = series.axes
            page = tif.pages[0]
            px, unit = _imagej_pixel_size(tif, page)
            source = "imagej" if px is not None else None
            if px is None:
                px, unit = _ome_pixel_size(tif)
                source = "ome" if px is not None else None
            if px is None:
                # Baseline tags: only mm/µm resolution units are physical here; inch/cm come
                # from generic writers (72 dpi, 300 dpi ...) and are not micrograph calibrations.
                res, resunit = page.resolution, int(page.resolutionunit)
                per_unit = {4: 1e7, 5: 1e4}.get(resunit)  # RESUNIT.MILLIMETER, MICROMETER
                if per_unit is not None and res and res[0] > 0 and res[1] > 0:
                    px = (per_unit / res[0], per_unit / res[1])
                    unit, source = {4: "mm", 5: "µm"}[resunit], "resolution tags"
            imagej = bool(tif.is_imagej)
    except Exception as e:
        raise MicrographError(
            f"{label}: could not read as a TIFF file ({type(e).__name__}: {e})"
        ) from e
    if "S" in axes:  # colour samples: only acceptable when all colour channels are equal
        s_axis = axes.index("S")
        n = data.shape[s_axis]
        colour = np.moveaxis(data, s_axis, -1)[..., : min(n, 3)]
        if n not in (1, 3, 4) or not np.all(colour == colour[..., :1]):
            raise MicrographError(
                f"{label}: colour (RGB/RGBA) image of shape {data.shape}, not a micrograph; "
                "expected a single-channel grayscale image"
            )
        data = colour[..., 0]
    reason = "" if px is not None else "no ImageJ, OME or mm/µm resolution calibration"
    meta = {"format": "tiff", "imagej": imagej, "units": unit, "pixel_size_tag": source}
    return data, px, reason, meta


def _read_npy(path: Path, label: str):
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise MicrographError(
            f"{label}: could not read as a .npy file ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(data, np.ndarray):
        raise MicrographError(f"{label}: expected one array in the .npy file")
    return data, None, ".npy files carry no pixel size", {"format": "npy"}


# --------------------------------------------------------------------------------------------


def read_micrograph(
    path, *, pixel_size_A: float | None = None, frame: int | None = None
) -> Micrograph:
    """Read one 2-D micrograph from .dm3/.dm4/.emd/.tif/.tiff/.npy.

    pixel_size_A (Å/px) overrides the file's calibration; if both exist and differ by more
    than 1 % a warning is logged and the explicit value is used. Without either the read fails:
    a wrong pixel size would silently put the image at the wrong scale.

    frame: index (0 ≤ frame < N) into a 3-D stack (N, H, W); required for stacks, and only
    `None` or 0 for single images. EMD/DM files with several image signals are resolved to the
    HAADF (else ADF) one by title; otherwise the titles are listed in the error.
    """
    label = str(path)
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise MicrographError(
            f"{label}: unsupported file type {p.suffix or '(no suffix)'!r}; supported: "
            + ", ".join(SUPPORTED_SUFFIXES)
        )
    if not p.exists():
        raise MicrographError(f"{label}: file not found")
    if not p.is_file():
        raise MicrographError(f"{label}: not a regular file")
    explicit = None if pixel_size_A is None else _check_pixel_size(label, pixel_size_A)

    if suffix in (".dm3", ".dm4", ".emd"):
        raw, file_xy, reason, meta = _read_rsciio(p, label, suffix.lstrip("."))
    elif suffix in (".tif", ".tiff"):
        raw, file_xy, reason, meta = _read_tif(p, label)
    else:
        raw, file_xy, reason, meta = _read_npy(p, label)

    raw = np.asarray(raw)
    original_dtype, original_shape = str(raw.dtype), tuple(raw.shape)

    if raw.ndim == 3:
        n = raw.shape[0]
        if frame is None:
            raise MicrographError(
                f"{label}: is a stack of {n} frames; pass frame=… (0 ≤ frame < {n})"
            )
        if isinstance(frame, bool) or not (isinstance(frame, int | np.integer) and 0 <= frame < n):
            raise MicrographError(
                f"{label}: frame={frame!r} out of range for a stack of {n} frames (0 ≤ frame < {n})"
            )
        raw, frame_out = raw[int(frame)], int(frame)  # select first: stacks can be large
    elif raw.ndim == 2:
        if frame is not None and frame != 0:
            raise MicrographError(
                f"{label}: frame={frame!r} out of range; the file holds a single 2-D image "
                "(frame=None or 0)"
            )
        n, frame_out = 1, None
    else:
        raise MicrographError(
            f"{label}: expected a 2-D image (H, W) or a stack (N, H, W), got shape {original_shape}"
        )

    data = _to_float32(label, raw)
    file_px = _file_pixel_size(label, file_xy, explicit)

    if explicit is not None:
        px, source = explicit, "explicit"
        if file_px is not None and abs(explicit - file_px) > _PIXEL_SIZE_RTOL * file_px:
            logger.warning(
                "%s: explicit pixel_size_A=%g Å/px differs from the file's %g Å/px by %.1f %%; "
                "using the explicit value",
                label,
                explicit,
                file_px,
                100.0 * abs(explicit - file_px) / file_px,
            )
    elif file_px is not None:
        px, source = file_px, "file"
    else:
        detail = f" ({reason})" if reason else ""
        raise MicrographError(
            f"{label}: no pixel size in the file's metadata{detail}; pass pixel_size_A=… (Å/px)"
        )

    image = _check_image(label, data)
    meta = dict(meta)
    meta.update(
        original_dtype=original_dtype,
        original_shape=original_shape,
        n_frames=n,
        file_pixel_size_A=file_px,
        pixel_size_source=source,
    )
    return Micrograph(
        image=image, pixel_size_A=float(px), path=label, frame=frame_out, metadata=meta
    )


def _file_pixel_size(
    label: str, file_xy: tuple[float, float] | None, explicit: float | None
) -> float | None:
    """The file's (x, y) Å/px → one square pixel size; bad calibrations are errors unless an
    explicit pixel size replaces them (then only a warning)."""
    if file_xy is None:
        return None
    px, py = (float(v) for v in file_xy)
    problem = None
    if not all(math.isfinite(v) and v > 0 for v in (px, py)):
        problem = f"the file's pixel size (x {px!r}, y {py!r} Å/px) is not positive and finite"
    elif abs(px - py) > _PIXEL_SIZE_RTOL * max(px, py):
        problem = f"non-square pixels in the file's metadata (x {px:.6g}, y {py:.6g} Å/px)"
    if problem is None:
        return px
    if explicit is None:
        raise MicrographError(f"{label}: {problem}; pass pixel_size_A=… (Å/px)")
    logger.warning("%s: %s; using pixel_size_A=%g Å/px", label, problem, explicit)
    return None


# --------------------------------------------------------------------------------------------


def write_tif(path, image, pixel_size_A: float, *, overwrite: bool = False) -> Path:
    """Write a 2-D image as float32 ImageJ TIFF with its pixel size; returns the path.

    The calibration is stored the ImageJ way (unit 'nm', X/YResolution = px per nm), which
    Fiji/ImageJ display and `read_micrograph` reads back (relative error ≲ 1e-9 from the
    rational tags). Existing files are only replaced with overwrite=True.
    """
    import tifffile

    p = Path(path)
    label = str(path)
    if p.suffix.lower() not in (".tif", ".tiff"):
        raise MicrographError(f"{label}: write_tif needs a .tif or .tiff suffix")
    if p.exists() and not overwrite:
        raise MicrographError(f"{label}: file exists; pass overwrite=True to replace it")
    px = _check_pixel_size(label, pixel_size_A)
    data = _to_float32(label, image)
    if data.ndim != 2:
        raise MicrographError(f"{label}: expected a 2-D image (H, W), got shape {data.shape}")
    per_nm = 10.0 / px  # px per nm
    tifffile.imwrite(
        p,
        np.ascontiguousarray(data),
        imagej=True,
        resolution=(per_nm, per_nm),
        metadata={"unit": "nm"},
    )
    return p


# --------------------------------------------------------------------------------------------

_PASSBAND = 0.75  # fraction of the new Nyquist frequency kept untouched when downsampling


def _dct_lowpass(image: np.ndarray, cutoff: float) -> np.ndarray:
    """Zero-phase separable low-pass (cycles/px `cutoff`) on the mirror extension of `image`.

    DCT-II of N samples is the DFT of their half-sample-symmetric extension (period 2N), so
    filtering DCT coefficients k (frequency k / 2N cycles/px) treats the image as
    non-periodic: no leakage between opposite edges, no edge discontinuity. The response is 1
    up to `_PASSBAND`·cutoff and falls as cos² to 0 at `cutoff` (smooth → little ringing).
    """
    out = image
    for axis, n in enumerate(image.shape):
        nu = np.arange(n) / (2.0 * n)
        lo = _PASSBAND * cutoff
        t = np.clip((nu - lo) / (cutoff - lo), 0.0, 1.0)
        h = np.cos(0.5 * np.pi * t) ** 2
        shape = [1, 1]
        shape[axis] = n
        coeffs = scipy.fft.dct(out, type=2, axis=axis, norm="ortho")
        out = scipy.fft.idct(coeffs * h.reshape(shape), type=2, axis=axis, norm="ortho")
    return out


def resample_to_pixel_size(
    image: np.ndarray, pixel_size_A: float, target_pixel_size_A: float
) -> np.ndarray:
    """Resample a 2-D image from `pixel_size_A` to `target_pixel_size_A` (Å/px), keeping the FOV.

    New shape = round(shape × old/new). Grid convention: pixel centres sit at integer indices
    and index 0 is kept fixed, so a feature at input pixel (r, c) lands at output
    (r·old/new, c·old/new).

    Method (for non-periodic micrographs): when downsampling, a band limit at the new Nyquist
    frequency is applied first — flat to 0.75× new Nyquist, cos² roll-off to 0 at new Nyquist,
    done in the DCT domain (= Fourier transform of the mirror-extended image, so opposite
    edges do not wrap into each other). Unlike a Gaussian pre-blur (σ ≈ (f−1)/2 loses ~5–25 %
    of lattice-frequency contrast), this keeps sub-Nyquist amplitudes exact and removes what
    would alias. Then cubic B-spline interpolation (scipy.ndimage, order 3) with mirror
    ('reflect') boundaries samples the new grid. Upsampling only interpolates.
    Identity (returns a float32 copy) when |old/new − 1| < 1e-6. Output is float32.
    """
    label = "resample_to_pixel_size"
    old = _check_pixel_size(label, pixel_size_A, "pixel_size_A")
    new = _check_pixel_size(label, target_pixel_size_A, "target_pixel_size_A")
    data = np.asarray(image)
    if data.ndim != 2:
        raise MicrographError(f"{label}: expected a 2-D image (H, W), got shape {data.shape}")
    data = _to_float32(label, data)
    zoom = old / new  # output px per input px
    if abs(zoom - 1.0) < 1e-6:
        return data.copy()
    out_shape = tuple(max(1, int(math.floor(n * zoom + 0.5))) for n in data.shape)
    work = data.astype(np.float64)
    if zoom < 1.0:  # downsampling: band-limit to the new Nyquist (0.5·zoom cycles/input px)
        work = _dct_lowpass(work, 0.5 * zoom)
    step = 1.0 / zoom  # input px per output px
    out = scipy.ndimage.affine_transform(
        work,
        np.array([step, step]),
        offset=0.0,
        output_shape=out_shape,
        order=3,
        mode="reflect",
        prefilter=True,
    )
    return out.astype(np.float32)
