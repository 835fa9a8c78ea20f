"""Fit lattice, probe, dose and detector to a micrograph through the differentiable simulator.

`calibrate(image, pixel_size, specimen=..., microscope=...)`:

1. Starting geometry from the Bragg spots (`lattice.estimate_lattice`); column responses of
   the material at that pixel size. The spots fix the rotation modulo 60° only, and θ + 60°
   swaps the metal and chalcogen columns, so both sublattice choices go through steps 2–4 and
   the one with the lower BIC wins (a swapped lattice can sit in a local optimum in which a
   large coma skews the columns; it is clearly worse only after the full fit).
2. Origin from the cross-correlation with the model, then Adam (optax) with a robust (Huber)
   likelihood, first with the coma held at 0, then on every parameter: defect columns, which
   the pristine-lattice model does not hold, pull less than quadratically.
3. Outlier columns: sites whose pixels' mean squared standardised residual is far beyond the
   noise get a free amplitude (and optionally a mask of radius `mask_radius` Å).
4. L-BFGS (optax) on the Gaussian (Poisson–Gaussian variance) negative log-likelihood, outliers
   re-scored until their set stops growing. For the winner, L-BFGS again from the mirrored even
   aberrations (−Δf, −C12): without odd aberrations the ADF image cannot tell them apart, and
   the better of the two is kept (and flagged when they are indistinguishable).
5. Uncertainties from the inverse Hessian of the negative log-likelihood at the optimum (the
   Cramér–Rao bound of the model; model error is not in it). Convergence is checked (Newton
   decrement, positive-definite curvature, reduced χ², fraction of outlier columns); a fit that
   fails raises `CalibrationError` saying which check failed.

Everything runs in float64 (`jax.enable_x64`), jitted once per image shape.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.calibrate.lattice import estimate_lattice
from stemjax.calibrate.model import (
    CALIBRATION_PHONONS,
    LOG_PARAMETERS,
    PARAMETERS,
    SIGN_FREE_PARAMETERS,
    UNITS,
    LatticeSetup,
    build_setup,
    column_responses,
    expected_signal,
    lattice_matrix,
    legendre_basis,
    polar_aberrations,
    site_pixels,
)
from stemjax.calibrate.optimize import Minimisers
from stemjax.microscope_prior import MicroscopePrior, load_microscope_prior, mean_microscope
from stemjax.physics.adf import Microscope


class CalibrationError(RuntimeError):
    """The fit did not converge to a credible optimum; the message says which check failed."""


#: Step scale of each parameter in the optimiser's unconstrained coordinates (natural units,
#: or relative for log-scaled ones): Adam moves each by about its scale per unit of learning rate.
SCALES = {
    "origin_x_px": 0.05,
    "origin_y_px": 0.05,
    "rotation_rad": 1e-3,
    "pixel_size_angstrom": 1e-3,
    "stretch": 1e-3,
    "shear": 1e-3,
    "defocus_angstrom": 5.0,
    "c12_x_angstrom": 5.0,
    "c12_y_angstrom": 5.0,
    "c21_x_angstrom": 50.0,
    "c21_y_angstrom": 50.0,
    "source_size_angstrom": 0.05,
    "dose_electrons_per_px": 0.02,
    "gain": 0.02,
    "offset": 1.0,  # times the image's noise scale, set per image
    "read_noise_electrons": 1.0,  # e⁻
}
BACKGROUND_SCALE = 1e-3
"""Step scale of the background coefficients (fraction of the beam)."""
AMPLITUDE_SCALE = 0.05
"""Step scale of the outlier columns' amplitudes (relative to the pristine column)."""


@dataclasses.dataclass(frozen=True)
class FitOptions:
    """Knobs of `calibrate` (defaults suit 64–512 px regions at ~0.2 Å/px).

    candidate_steps: robust Adam of each sublattice choice with the coma held at 0; adam_steps /
    adam_lr: then with every parameter free. lbfgs_steps: Gaussian stage (iterations). huber: robust
    threshold in standardised residuals. outlier_sigma: a site is an outlier when its pixels'
    mean z² exceeds 1 + outlier_sigma·√(2/n); each outlier gets a free amplitude in the final
    fit. mask_radius: radius (Å) also masked around outliers (0: none, the amplitude models it).
    site_radius: radius (Å) over which a site's residual is scored. max_reduced_chi2 /
    max_outlier_fraction: convergence checks. background_order: Legendre degree (0: none).
    ambiguity_nll: the defocus sign is reported as ambiguous (both solutions kept) when the
    mirrored (−Δf, −C12) solution's NLL is within this of the best. Not 2 (a likelihood-ratio
    threshold for an exact model): on full-multislice images with frozen phonons
    (benchmarks/calibrate_multislice.py) the column-response model's own mismatch moves the
    mirrored NLL by 12–15 and once picked the wrong sign, so the margin covers that.
    """

    candidate_steps: int = 150
    adam_steps: int = 200
    adam_lr: float = 0.3
    lbfgs_steps: int = 200
    huber: float = 3.0
    outlier_sigma: float = 4.0
    mask_radius: float = 0.0
    site_radius: float = 0.8
    max_reduced_chi2: float = 1.5
    max_outlier_fraction: float = 0.4
    background_order: int = 2
    max_newton_decrement: float = 0.1
    ambiguity_nll: float = 25.0
    min_registration_delta: float = 10.0


@dataclasses.dataclass
class Calibration:
    """Result of `calibrate`: fitted values with 1σ uncertainties and the fit's quality.

    values / sigma: every `model.PARAMETERS` entry (units in `units`). derived: C12, φ12, C21,
    φ21 (Å, rad), rotation in degrees, pixel sizes along the image axes (Å/px) and the angle
    between the scan axes (deg), each with its sigma in `derived_sigma`. background: Legendre
    coefficients (fraction of the beam). covariance: over `PARAMETERS` (physical units).
    reduced_chi2: mean squared standardised residual over unmasked pixels (≈ 1 for a model
    that fits the noise). outlier_sites: (K, 2) px of the columns the pristine lattice does not
    fit (defects), each given a free amplitude (`outlier_amplitudes`, 1 = pristine) in the
    final fit. mask: (H, W) pixels used in the final likelihood. image / model: observed and
    fitted mean signal.
    defocus_sign_ambiguous: the mirrored even aberrations fit about as well (ΔNLL <
    `FitOptions.ambiguity_nll`).
    registration_delta_nll: how much worse (BIC, in NLL units) the lattice rotated by 60° (metal
    and chalcogen columns swapped) fits; inf when the rotation was given.
    alternative: when `defocus_sign_ambiguous`, the mirrored solution (values, sigma, derived,
    derived_sigma as above, delta_nll = its NLL − the best one's); None otherwise. A single ADF
    image of a thin specimen cannot tell (Δf, C12) from (−Δf, −C12) when the odd aberrations
    are weak (the probe intensity is the same, up to the fixed Cs, which shifts the mirrored Δf),
    so both are reported and `to_microscope_config` covers both.
    """

    values: dict[str, float]
    sigma: dict[str, float]
    derived: dict[str, float]
    derived_sigma: dict[str, float]
    background: np.ndarray
    covariance: np.ndarray
    reduced_chi2: float
    nll_per_pixel: float
    outlier_sites: np.ndarray
    outlier_amplitudes: np.ndarray
    mask: np.ndarray
    image: np.ndarray
    model: np.ndarray
    variance: np.ndarray
    defocus_sign_ambiguous: bool
    mirror_delta_nll: float
    registration_delta_nll: float
    alternative: dict | None
    newton_decrement: float
    seconds: float
    setup: LatticeSetup
    units: dict[str, str] = dataclasses.field(default_factory=lambda: dict(UNITS))

    @property
    def residual(self) -> np.ndarray:
        """Standardised residual (image − model) / √variance."""
        return (self.image - self.model) / np.sqrt(self.variance)

    def table(self):
        """pandas DataFrame: parameter, value, sigma, unit (fitted and derived quantities)."""
        import pandas as pd

        rows = [(k, self.values[k], self.sigma[k], UNITS[k]) for k in PARAMETERS]
        derived_units = {
            "C12": "Å",
            "phi12": "rad",
            "C21": "Å",
            "phi21": "rad",
            "rotation_deg": "deg",
            "pixel_size_x_angstrom": "Å/px",
            "pixel_size_y_angstrom": "Å/px",
            "scan_axes_angle_deg": "deg",
        }
        rows += [(k, v, self.derived_sigma[k], derived_units[k]) for k, v in self.derived.items()]
        return pd.DataFrame(rows, columns=["parameter", "value", "sigma", "unit"])

    def to_microscope_config(self, base: str = "wse2te", **kwargs):
        """A `conf/microscope/` prior centred on this fit (see `stemjax.calibrate.export`)."""
        from stemjax.calibrate.export import microscope_config

        return microscope_config(self, base=base, **kwargs)

    def plot(self):
        """Figure: observed, fitted, standardised residual (outlier columns circled)."""
        from stemjax.calibrate.plot import plot_calibration

        return plot_calibration(self)


# ----------------------------------------------------------------------------------------------
# Parameter vector ↔ physical values
# ----------------------------------------------------------------------------------------------


def _unpack(theta, start: dict, scales: dict, n_background: int):
    """Physical values (dict) and background coefficients from the unconstrained vector
    (entries after the background are outlier-column amplitudes, see `_amplitudes`)."""
    values = {}
    for i, name in enumerate(PARAMETERS):
        if name in LOG_PARAMETERS:
            values[name] = start[name] * jnp.exp(scales[name] * theta[i])
        elif name in SIGN_FREE_PARAMETERS:
            values[name] = jnp.abs(start[name] + scales[name] * theta[i])
        else:
            values[name] = start[name] + scales[name] * theta[i]
    values["source_size_angstrom"] = jnp.abs(values["source_size_angstrom"])
    n = len(PARAMETERS)
    background = start["background"] + BACKGROUND_SCALE * theta[n : n + n_background]
    return values, background


def _amplitudes(theta, n_sites: int, outlier_index, n_background: int):
    """(M,) response factor of every site: 1, except the outlier columns' free amplitudes
    (theta's entries after the background, one per `outlier_index` entry; an index ≥ M is
    padding and sets nothing)."""
    free = 1.0 + AMPLITUDE_SCALE * theta[len(PARAMETERS) + n_background :]
    return jnp.ones(n_sites, theta.dtype).at[outlier_index].set(free, mode="drop")


def _padded(outlier_index, n_sites: int) -> jnp.ndarray:
    """(n_sites,) int32: the outlier sites, then padding (index n_sites). Fits whose outlier
    set grows keep one parameter-vector shape, so their L-BFGS step compiles once."""
    out = np.full(n_sites, n_sites, np.int32)
    out[: len(outlier_index)] = outlier_index
    return jnp.asarray(out)


def _physical_vector(theta, start, scales, n_background):
    values, background = _unpack(theta, start, scales, n_background)
    amps = 1.0 + AMPLITUDE_SCALE * theta[len(PARAMETERS) + n_background :]
    return jnp.concatenate([jnp.stack([values[k] for k in PARAMETERS]), background, amps])


# ----------------------------------------------------------------------------------------------
# Likelihood
# ----------------------------------------------------------------------------------------------


def _huber(z2, delta):
    """Huber ρ of z with z² given: z²/2 inside |z| ≤ δ, δ|z| − δ²/2 outside."""
    z = jnp.sqrt(z2 + 1e-30)
    return jnp.where(z <= delta, 0.5 * z2, delta * z - 0.5 * delta**2)


def _make_objectives(setup: LatticeSetup, image, scales, n_background, huber):
    """Model, z², loss, total NLL and its Hessian and gradient for one image, made once per fit.
    Each takes `outliers`, (K,) int32 site indices whose amplitudes are theta's last K entries
    (`_amplitudes`), as data: each shape of theta compiles once, whichever sites they are."""
    basis = jnp.asarray(legendre_basis(setup.image_shape, setup.background_order))[:n_background]
    y = jnp.asarray(image)
    n_sites = len(setup.site_xy)

    def model(theta, start, outliers):
        values, background = _unpack(theta, start, scales, n_background)
        amplitude = _amplitudes(theta, n_sites, outliers, n_background)
        return expected_signal(values, background, setup, basis, site_amplitude=amplitude)

    def nll_terms(theta, start, outliers, robust):
        mean, var = model(theta, start, outliers)
        var = jnp.maximum(var, 1e-12)
        z2 = (y - mean) ** 2 / var
        rho = jnp.where(robust, _huber(z2, huber), 0.5 * z2)
        return rho + 0.5 * jnp.log(var), z2

    def loss(theta, start, mask, robust, outliers):
        terms, _ = nll_terms(theta, start, outliers, robust)
        return jnp.sum(jnp.where(mask, terms, 0.0)) / jnp.sum(mask)

    def total_nll(theta, start, mask, outliers):
        terms, _ = nll_terms(theta, start, outliers, False)
        return jnp.sum(jnp.where(mask, terms, 0.0))

    return (
        jax.jit(model),
        jax.jit(lambda t, s, o: nll_terms(t, s, o, False)[1]),
        loss,
        jax.jit(total_nll),
        jax.jit(jax.hessian(total_nll)),
        jax.jit(jax.grad(total_nll)),
    )


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------


def _cross_correlation_origin(image, template) -> np.ndarray:
    """Shift (px) that best aligns `template` with `image` (periodic cross-correlation)."""
    a = np.asarray(image, np.float64) - np.mean(image)
    b = np.asarray(template, np.float64) - np.mean(template)
    cc = np.fft.ifft2(np.fft.fft2(a) * np.conj(np.fft.fft2(b))).real
    i, j = np.unravel_index(np.argmax(cc), cc.shape)
    shift = np.array([i, j], np.float64)
    shape = np.array(cc.shape)
    return np.where(shift > shape / 2, shift - shape, shift)


def _linear_intensity(image, signal) -> tuple[float, float, float, float]:
    """(gain·dose, offset, gain, read noise in e⁻) from least squares of the image on the model
    signal, and of the squared residual on the Poisson–Gaussian law var = gain·(mean − offset)
    + gain²·r²."""
    a = np.stack([signal.ravel(), np.ones(signal.size)], 1)
    coef, *_ = np.linalg.lstsq(a, image.ravel(), rcond=None)
    scale, offset = float(coef[0]), float(coef[1])
    fitted = a @ coef
    resid2 = (image.ravel() - fitted) ** 2
    b = np.stack([fitted - offset, np.ones(signal.size)], 1)
    gcoef, *_ = np.linalg.lstsq(b, resid2, rcond=None)
    gain = float(gcoef[0]) if gcoef[0] > 0 else max(float(np.var(image)) / max(scale, 1e-12), 1e-6)
    read = math.sqrt(max(float(gcoef[1]), 0.0)) / gain
    return scale, offset, gain, read


def _outlier_sites(z2, uv, setup: LatticeSetup, pixel_size, options: FitOptions):
    """Indices of the columns whose residual is beyond the noise, the pixel mask around them
    (`mask_radius`, 0 = none), and the number of columns scored.

    A column is scored on the pixels within `site_radius` of it (columns just outside the
    image too, on the pixels they have inside): outlier when the mean z² exceeds
    1 + outlier_sigma·√(2/n).
    """
    h, w = setup.image_shape
    rr, cc = np.mgrid[0:h, 0:w]
    r_site = options.site_radius / pixel_size
    r_mask = options.mask_radius / pixel_size
    reach = max(r_site, r_mask)
    near = np.all((uv >= -r_site) & (uv <= np.array([h - 1, w - 1]) + r_site), axis=1)
    out, mask, scored = [], np.ones((h, w), bool), 0
    for i in np.flatnonzero(near):
        u = uv[i]
        lo = np.maximum(np.floor(u - reach).astype(int), 0)
        hi = np.minimum(np.ceil(u + reach).astype(int) + 1, [h, w])
        if np.any(hi <= lo):
            continue
        sub_r = rr[lo[0] : hi[0], lo[1] : hi[1]]
        sub_c = cc[lo[0] : hi[0], lo[1] : hi[1]]
        d2 = (sub_r - u[0]) ** 2 + (sub_c - u[1]) ** 2
        core = d2 <= r_site**2
        n = int(core.sum())
        if n < 3:
            continue
        scored += 1
        score = float(z2[lo[0] : hi[0], lo[1] : hi[1]][core].mean())
        if score > 1.0 + options.outlier_sigma * math.sqrt(2.0 / n):
            out.append(i)
            if r_mask > 0:
                mask[lo[0] : hi[0], lo[1] : hi[1]] &= d2 > r_mask**2
    return np.asarray(out, np.int64), mask, scored


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


def _check_image(image, pixel_size):
    arr = np.asarray(image)
    if arr.ndim != 2:
        raise ValueError(f"image: expected a 2-D micrograph region, got shape {arr.shape}")
    if min(arr.shape) < 32:
        raise ValueError(f"image: expected at least 32 × 32 px, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"image: {int(np.sum(~np.isfinite(arr)))} NaN/inf pixel(s); crop or fill them first"
        )
    if not (np.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(
            f"pixel_size: expected a positive nominal pixel size in Å, got {pixel_size}"
        )
    return arr.astype(np.float64)


def _resolve_inputs(image, pixel_size, specimen, microscope):
    from stemjax.io import Micrograph, read_micrograph
    from stemjax.specimen import load_specimen_config

    if isinstance(image, str) or hasattr(image, "__fspath__"):
        image = read_micrograph(image, pixel_size_A=pixel_size)
    if isinstance(image, Micrograph):
        pixel_size = image.pixel_size_A if pixel_size is None else pixel_size
        image = image.image
    if pixel_size is None:
        raise ValueError("pixel_size: give the nominal pixel size in Å (the fit refines it)")
    if isinstance(specimen, str):
        specimen = load_specimen_config(specimen)
    if isinstance(microscope, str):
        microscope = load_microscope_prior(microscope)
    if isinstance(microscope, MicroscopePrior):
        microscope = mean_microscope(microscope)
    if not isinstance(microscope, Microscope):
        raise TypeError(
            "microscope: expected a conf/microscope name, a MicroscopePrior or a Microscope, got "
            f"{type(microscope).__name__}"
        )
    return _check_image(image, float(pixel_size)), float(pixel_size), specimen, microscope


def calibrate(
    image,
    pixel_size: float | None = None,
    *,
    specimen="wse2te",
    microscope="wse2te",
    initial: dict | None = None,
    responses=None,
    options: FitOptions | None = None,
    frozen_phonons: int = CALIBRATION_PHONONS,
    oversampling: int | None = None,
    strict: bool = True,
    verbose: bool = False,
) -> Calibration:
    """Fit the lattice and microscope to a micrograph region of a known material.

    image: 2-D array (detector units, not normalised: the noise model needs raw counts up to a
    gain and offset), a `stemjax.io.Micrograph` or a file path (.dm3/.dm4/.emd/.tif/.npy).
    pixel_size: nominal Å/px (from the file if omitted). specimen: conf/specimen name or
    SpecimenConfig (lattice constant, columns). microscope: conf/microscope name, MicroscopePrior
    (`mean_microscope`) or Microscope: energy, angles and the aberrations that are not fitted.
    initial: optional starting values (e.g. {"rotation_rad": 0.3}); given geometry skips the
    Bragg-spot estimate for those entries. responses: precomputed column responses (from
    `model.column_responses`) to reuse across images of one session. frozen_phonons /
    oversampling: accuracy of the column responses (default `model.CALIBRATION_PHONONS`).
    strict: raise CalibrationError when the fit fails its checks (else return the result with
    the failed check in a warning).
    """
    t0 = time.perf_counter()
    options = options or FitOptions()
    image, p0, specimen, microscope = _resolve_inputs(image, pixel_size, specimen, microscope)
    initial = dict(initial or {})
    unknown = sorted(set(initial) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"initial: unknown parameter(s) {unknown}; expected some of {PARAMETERS}")
    with jax.enable_x64(True):
        return _calibrate(
            image, p0, specimen, microscope, initial, responses, options,
            frozen_phonons, oversampling, strict, verbose, t0,
        )  # fmt: skip


def _calibrate(image, p0, specimen, microscope, initial, responses, options, frozen_phonons,
               oversampling, strict, verbose, t0):  # fmt: skip
    def _log(verbose, msg):
        if verbose:
            print(f"[calibrate {time.perf_counter() - t0:6.1f} s] {msg}", flush=True)

    geometry_keys = ("pixel_size_angstrom", "rotation_rad", "stretch", "shear")
    geom = {"pixel_size_angstrom": p0, "rotation_rad": 0.0, "stretch": 0.0, "shear": 0.0}
    if not all(k in initial for k in ("pixel_size_angstrom", "rotation_rad")):
        geom.update(estimate_lattice(image, p0, float(specimen.a)))
        _log(verbose, f"Bragg spots: {geom}")
    geom.update({k: float(initial[k]) for k in geometry_keys if k in initial})
    if responses is None:
        responses, _ = column_responses(
            specimen,
            microscope,
            geom["pixel_size_angstrom"],
            frozen_phonons=frozen_phonons,
            oversampling=oversampling,
        )
        _log(verbose, f"column responses at {geom['pixel_size_angstrom']:.4f} Å/px")
    setup = build_setup(
        specimen,
        responses,
        microscope,
        image.shape,
        max_pixel_size=1.15 * max(geom["pixel_size_angstrom"], p0),
        background_order=options.background_order,
    )
    n_bg = setup.num_background
    noise_scale = float(np.std(image - np.roll(image, 1, 0))) / math.sqrt(2.0) + 1e-12
    scales = dict(SCALES, offset=noise_scale)
    mask_all = jnp.ones(image.shape, bool)
    mini = Minimisers()  # compiles each stage's step once per objective and shape

    base = {
        "origin_x_px": 0.5 * (image.shape[0] - 1),
        "origin_y_px": 0.5 * (image.shape[1] - 1),
        "defocus_angstrom": -float(microscope.aberrations.C10),
        "c12_x_angstrom": 0.0,
        "c12_y_angstrom": 0.0,
        "c21_x_angstrom": 0.0,
        "c21_y_angstrom": 0.0,
        "source_size_angstrom": float(microscope.source_size),
        "dose_electrons_per_px": 1.0,
        "gain": 1.0,
        "offset": 0.0,
        "read_noise_electrons": 1.0,
        **geom,
    }
    base.update({k: float(v) for k, v in initial.items()})
    if base["defocus_angstrom"] == 0.0 and "defocus_angstrom" not in initial:
        base["defocus_angstrom"] = 3.0  # off the symmetric point, where ∂I/∂Δf = 0
    base["source_size_angstrom"] = max(base["source_size_angstrom"], 0.1)

    n_core = len(PARAMETERS) + n_bg
    n_lattice_sites = len(setup.site_xy)  # every column of the setup (n_sites: those scored)
    theta0 = jnp.zeros(n_core)
    no_outliers = jnp.zeros(0, jnp.int32)
    model_fn, z2_fn, loss_fn, total_nll, hessian_fn, grad_fn = _make_objectives(
        setup, image, scales, n_bg, options.huber
    )

    def start_dict(values):
        d = {k: jnp.asarray(values[k], jnp.float64) for k in PARAMETERS}
        d["background"] = jnp.zeros(n_bg)
        return d

    def init_intensity(values):
        """Origin by cross-correlation, then dose·gain, offset, gain, read noise by regression."""
        values = dict(values)
        values.update(dose_electrons_per_px=1.0, gain=1.0, offset=0.0, read_noise_electrons=0.0)
        start = start_dict(values)
        signal = np.asarray(model_fn(theta0, start, no_outliers)[0])
        if "origin_x_px" not in initial:
            shift = _cross_correlation_origin(image, signal)
            values["origin_x_px"] += shift[0]
            values["origin_y_px"] += shift[1]
            signal = np.asarray(model_fn(theta0, start_dict(values), no_outliers)[0])
        scale, offset, gain, read = _linear_intensity(image, signal)
        values.update(
            gain=max(gain, 1e-6),
            dose_electrons_per_px=max(scale / max(gain, 1e-6), 1e-6),
            offset=offset,
            read_noise_electrons=max(read, 1.0),
        )
        return values

    frozen_coma = np.zeros(len(PARAMETERS) + n_bg, bool)
    frozen_coma[[PARAMETERS.index("c21_x_angstrom"), PARAMETERS.index("c21_y_angstrom")]] = True

    def fit_registration(turn):
        """Robust Adam (coma held at 0, then free), outlier columns, Gaussian L-BFGS for the
        lattice rotated by `turn`. Returns the fit state (dict)."""
        values = init_intensity(dict(base, rotation_rad=base["rotation_rad"] + turn))
        start = start_dict(values)
        robust = (start, mask_all, True, no_outliers)
        theta, value = mini.adam(loss_fn, theta0, options.candidate_steps, options.adam_lr,
                                 args=robust, frozen=frozen_coma)  # fmt: skip
        theta, value = mini.adam(loss_fn, theta, options.adam_steps, options.adam_lr, args=robust)
        _log(verbose, f"lattice θ+{math.degrees(turn):.0f}°: robust loss {value:.5f}")
        # outlier columns, each with a free amplitude in the Gaussian likelihood (L-BFGS); the
        # set is re-scored on the new residual until it stops growing (≤ 3 rounds). theta holds
        # an amplitude slot for every site (`_padded`), so every round shares one compilation
        theta = jnp.concatenate([theta, jnp.zeros(n_lattice_sites)])
        outlier_index = np.zeros(0, np.int64)
        mask_np = np.ones(image.shape, bool)
        for _round in range(4):
            values, _ = _unpack(theta, start, scales, n_bg)
            uv = np.asarray(site_pixels(values, setup))
            new, mask_new, n_sites = _outlier_sites(
                np.asarray(z2_fn(theta, start, _padded(outlier_index, n_lattice_sites))), uv, setup,
                float(values["pixel_size_angstrom"]), options,
            )  # fmt: skip
            added = np.setdiff1d(new, outlier_index)
            if _round:
                _log(verbose, f"  L-BFGS: loss {value:.6f}; {len(added)} more outlier column(s)")
            if (_round and not len(added)) or _round == 3:
                break
            outlier_index = np.concatenate([outlier_index, added])
            mask_np = mask_np & mask_new
            mask = jnp.asarray(mask_np)
            theta, value = mini.lbfgs(loss_fn, theta, options.lbfgs_steps,
                                      tol=1e-4 / float(mask_np.sum()),
                                      args=(start, mask, False,
                                            _padded(outlier_index, n_lattice_sites)))  # fmt: skip
        n_used = float(mask_np.sum())
        # Bayesian information criterion per used pixel: each outlier amplitude costs ½ ln n.
        score = value + 0.5 * len(outlier_index) * math.log(n_used) / n_used
        _log(verbose, f"  {len(outlier_index)} of {n_sites} outlier columns; BIC/px {score:.6f}")
        return dict(theta=theta, value=value, start=start, mask_np=mask_np,
                    outlier_index=outlier_index, n_sites=n_sites, uv=uv, score=score)  # fmt: skip

    # --- sublattice choice: the Bragg spots fix the rotation only modulo 60°, and θ + 60° swaps
    # the metal and chalcogen columns. Both are fitted to the end of the Gaussian stage (a swapped
    # lattice can sit in a local optimum, with the coma skewing every column to mimic the true
    # one, that is only clearly worse after the full fit); the lower BIC wins ------------------
    turns = (0.0,) if "rotation_rad" in initial else (0.0, math.pi / 3)
    fits = [fit_registration(turn) for turn in turns]
    best = min(fits, key=lambda f: f["score"])
    registration_delta = (
        (max(f["score"] for f in fits) - best["score"]) * float(best["mask_np"].sum())
        if len(fits) > 1
        else np.inf
    )
    theta, value, start = best["theta"], best["value"], best["start"]
    mask_np, outlier_index, n_sites = best["mask_np"], best["outlier_index"], best["n_sites"]
    mask = jnp.asarray(mask_np)
    padded = _padded(outlier_index, n_lattice_sites)  # theta: every site's slot (L-BFGS stages)
    exact = jnp.asarray(outlier_index, jnp.int32)  # theta[: n_exact]: the outliers' (polish)
    n_exact = n_core + len(outlier_index)
    outliers = best["uv"][outlier_index]
    if strict:  # a misfit here stays one (the restarts and the polish move the NLL by a few
        # units): say so now rather than after them
        z2 = np.asarray(z2_fn(theta, start, padded))
        problems = _fit_problems(float(z2[mask_np].mean()), len(outlier_index) / max(n_sites, 1),
                                 registration_delta, options)  # fmt: skip
        if problems:
            raise CalibrationError("calibration did not converge: " + "; ".join(problems))

    # --- the defocus–astigmatism ambiguity: restart from the mirrored even aberrations and
    # from the defocus on the other side of focus; move to a better one and restart from there
    # (the mirror of a mirror is the original basin), until neither improves ---------------------
    n_used = float(mask_np.sum())
    starts = {
        "mirrored (−Δf, −C12)": {"defocus_angstrom": -1, "c12_x_angstrom": -1,
                                 "c12_y_angstrom": -1},
        "other side of focus (−Δf)": {"defocus_angstrom": -1},
    }  # fmt: skip

    def restart(theta, flips):
        v_now, _ = _unpack(theta, start, scales, n_bg)
        alt = np.array(theta)
        for name, sign in flips.items():
            i = PARAMETERS.index(name)
            alt[i] = (sign * float(v_now[name]) - float(start[name])) / scales[name]
        return mini.lbfgs(loss_fn, jnp.asarray(alt), options.lbfgs_steps, tol=1e-4 / n_used,
                          args=(start, mask, False, padded))  # fmt: skip

    for _ in range(3):
        tried = {label: restart(theta, flips) for label, flips in starts.items()}
        for label, (_, value_a) in tried.items():
            _log(verbose, f"restart from {label}: ΔNLL {(value_a - value) * n_used:+.2f}")
        mirrored = (theta, tried["mirrored (−Δf, −C12)"][0])
        delta = float((tried["mirrored (−Δf, −C12)"][1] - value) * n_used)
        label = min(tried, key=lambda k: tried[k][1])
        if (tried[label][1] - value) * n_used > -0.5:
            break
        theta, value = tried[label]
    else:  # still moving after three rounds: the mirror of where it stopped
        theta_m, value_m = restart(theta, starts["mirrored (−Δf, −C12)"])
        mirrored, delta = (theta, theta_m), float((value_m - value) * n_used)
    ambiguous = abs(delta) < options.ambiguity_nll

    def polish(theta):
        """A few Newton steps on the total NLL (L-BFGS stops on a loss tolerance; the
        uncertainties need the optimum itself), each kept only if it lowers the NLL; then the
        values, 1σ (inverse Hessian, delta method), derived quantities and the curvature checks'
        numbers at the optimum, from the Hessian the last step computed. `theta` may carry the
        padded amplitude slots of the L-BFGS stages; the returned one has only the outliers'."""
        theta = theta[:n_exact]
        f0 = float(total_nll(theta, start, mask, exact))
        for _ in range(8):
            hess = np.asarray(hessian_fn(theta, start, mask, exact))
            grad = np.asarray(grad_fn(theta, start, mask, exact))
            try:
                step = np.linalg.solve(hess, grad)
            except np.linalg.LinAlgError:
                break
            if not float(grad @ step) > 1e-6:  # not a descent direction, or converged
                break
            for t in (1.0, 0.5, 0.25, 0.125):
                trial = theta - t * jnp.asarray(step)
                f1 = float(total_nll(trial, start, mask, exact))
                if f1 < f0:
                    theta, f0 = trial, f1
                    break
            else:
                break
        else:  # every step taken: the curvature at where it stopped
            hess = np.asarray(hessian_fn(theta, start, mask, exact))
            grad = np.asarray(grad_fn(theta, start, mask, exact))
        try:
            eig_min = float(np.linalg.eigvalsh(hess).min())
            cov_theta = np.linalg.pinv(hess)
        except np.linalg.LinAlgError:
            eig_min, cov_theta = np.nan, np.full(hess.shape, np.nan)
        jac = np.asarray(jax.jacobian(_physical_vector)(theta, start, scales, n_bg))
        cov = jac @ cov_theta @ jac.T
        phys = np.asarray(_physical_vector(theta, start, scales, n_bg))
        values = {k: float(phys[i]) for i, k in enumerate(PARAMETERS)}
        sigma = {k: float(math.sqrt(max(cov[i, i], 0.0))) for i, k in enumerate(PARAMETERS)}
        derived, derived_sigma = _derived(phys, cov)
        return theta, dict(phys=phys, cov=cov, values=values, sigma=sigma, derived=derived,
                           derived_sigma=derived_sigma, eig_min=eig_min,
                           decrement=float(grad @ cov_theta @ grad),
                           decrement_parts=grad * (cov_theta @ grad))  # fmt: skip

    # --- curvature, uncertainties, checks ------------------------------------------------------
    theta, best = polish(theta)
    _log(verbose, f"Newton polish and curvature: Newton decrement {best['decrement']:.2g}")
    alternative = None
    if ambiguous:  # report the mirrored solution too: the image cannot tell them apart

        def distance(t):  # from the best solution in (Δf, C12): the mirrored one is far
            v, _ = _unpack(t, start, scales, n_bg)
            keys = ("defocus_angstrom", "c12_x_angstrom", "c12_y_angstrom")
            return sum(abs(float(v[k]) - best["values"][k]) for k in keys)

        other, alternative = polish(max(mirrored, key=distance))
        alternative["delta_nll"] = float(
            total_nll(other, start, mask, exact) - total_nll(theta, start, mask, exact)
        )
        for key in ("phys", "cov", "eig_min", "decrement", "decrement_parts"):
            alternative.pop(key)
        _log(
            verbose,
            f"mirrored solution kept as the alternative: ΔNLL {alternative['delta_nll']:+.2f}",
        )
    problems = []
    if not best["eig_min"] > 0:
        problems.append(
            f"the likelihood's curvature is not positive definite (smallest eigenvalue "
            f"{best['eig_min']:.3g}): a parameter is not determined by this image"
        )
    decrement = best["decrement"]
    if not decrement < options.max_newton_decrement:
        names = [
            *PARAMETERS,
            *(f"background[{i}]" for i in range(n_bg)),
            *(f"amplitude of outlier column {j}" for j in range(len(outlier_index))),
        ]
        problems.append(
            f"not at an optimum: Newton decrement {decrement:.3g} (the likelihood could still "
            f"drop by ~{decrement / 2:.3g}), mostly along "
            f"{_largest_parts(best['decrement_parts'], names)}; more lbfgs_steps or a better start"
        )
    phys, cov = best["phys"], best["cov"]
    values, sigma = best["values"], best["sigma"]
    derived, derived_sigma = best["derived"], best["derived_sigma"]
    mean, var = (np.asarray(a) for a in model_fn(theta, start, exact))
    z2 = (image - mean) ** 2 / var
    reduced = float(z2[mask_np].mean())
    fraction = len(outlier_index) / max(n_sites, 1)
    problems += _fit_problems(reduced, fraction, registration_delta, options)
    result = Calibration(
        values=values,
        sigma=sigma,
        derived=derived,
        derived_sigma=derived_sigma,
        background=phys[len(PARAMETERS) : len(PARAMETERS) + n_bg],
        outlier_amplitudes=phys[len(PARAMETERS) + n_bg :],
        covariance=cov[: len(PARAMETERS), : len(PARAMETERS)],
        reduced_chi2=reduced,
        nll_per_pixel=float(value),
        outlier_sites=outliers,
        mask=mask_np,
        image=image,
        model=mean,
        variance=var,
        defocus_sign_ambiguous=bool(ambiguous),
        mirror_delta_nll=float(delta),
        registration_delta_nll=float(registration_delta),
        alternative=alternative,
        newton_decrement=decrement,
        seconds=time.perf_counter() - t0,
        setup=setup,
    )
    if problems:
        message = "calibration did not converge: " + "; ".join(problems)
        if strict:
            raise CalibrationError(message)
        import warnings

        warnings.warn(message, stacklevel=3)
    return result


def _largest_parts(parts: np.ndarray, names: list[str], n: int = 3) -> str:
    """The `n` parameters with the largest share of a Newton decrement, as 'name (share)'."""
    parts = np.asarray(parts, np.float64)
    total = float(np.abs(parts).sum()) or 1.0
    order = np.argsort(-np.abs(parts))[:n]
    return ", ".join(f"{names[i]} ({parts[i] / total:.0%})" for i in order)


def _fit_problems(reduced_chi2, outlier_fraction, registration_delta, options: FitOptions):
    """What the fit quality says is wrong (messages for `CalibrationError`): reduced χ² too
    high, the sublattices not told apart, too many columns off the lattice."""
    problems = []
    if reduced_chi2 > options.max_reduced_chi2:
        problems.append(
            f"the model does not fit the image: reduced χ² {reduced_chi2:.2f} > "
            f"{options.max_reduced_chi2} (wrong material, pixel size far off, a bad start, or "
            "strong non-affine scan distortion)"
        )
    if registration_delta < options.min_registration_delta:
        problems.append(
            f"the metal and chalcogen columns cannot be told apart: the lattice rotated by 60° "
            f"fits almost as well (ΔBIC {registration_delta:.3g} < "
            f"{options.min_registration_delta}); give `initial={{'rotation_rad': ...}}` or a "
            "larger region"
        )
    if outlier_fraction > options.max_outlier_fraction:
        problems.append(
            f"{outlier_fraction:.0%} of the columns disagree with the fitted lattice (limit "
            f"{options.max_outlier_fraction:.0%}): the lattice is probably misregistered"
        )
    return problems


def _derived(phys: np.ndarray, cov: np.ndarray):
    """Derived quantities and their 1σ by the delta method (Jacobian of the map)."""
    n = len(PARAMETERS)

    def fn(v):
        d = dict(zip(PARAMETERS, v[:n], strict=True))
        m = lattice_matrix(d)
        minv = jnp.linalg.inv(m)  # px → Å
        ax0, ax1 = minv[:, 0], minv[:, 1]
        c12 = jnp.sqrt(d["c12_x_angstrom"] ** 2 + d["c12_y_angstrom"] ** 2 + 1e-30)
        c21 = jnp.sqrt(d["c21_x_angstrom"] ** 2 + d["c21_y_angstrom"] ** 2 + 1e-30)
        cosang = jnp.dot(ax0, ax1) / (jnp.linalg.norm(ax0) * jnp.linalg.norm(ax1))
        return jnp.stack([
            c12,
            jnp.arctan2(d["c12_y_angstrom"], d["c12_x_angstrom"]) / 2,
            c21,
            jnp.arctan2(d["c21_y_angstrom"], d["c21_x_angstrom"]),
            jnp.rad2deg(d["rotation_rad"]),
            jnp.linalg.norm(ax0),
            jnp.linalg.norm(ax1),
            jnp.rad2deg(jnp.arccos(cosang)),
        ])  # fmt: skip

    names = ("C12", "phi12", "C21", "phi21", "rotation_deg", "pixel_size_x_angstrom",
             "pixel_size_y_angstrom", "scan_axes_angle_deg")  # fmt: skip
    v = jnp.asarray(phys)
    out = np.array(fn(v))
    jac = np.asarray(jax.jacobian(fn)(v))[:, :n]
    dcov = jac @ cov[:n, :n] @ jac.T
    polar = polar_aberrations(dict(zip(PARAMETERS, phys[:n], strict=True)))
    out[1], out[3] = polar["phi12"], polar["phi21"]
    derived = {k: float(x) for k, x in zip(names, out, strict=True)}
    sig = {k: float(math.sqrt(max(dcov[i, i], 0.0))) for i, k in enumerate(names)}
    return derived, sig
