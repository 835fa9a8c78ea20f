"""Local column refinement: the displacement field around a defect, from its class average.

A class average (the mean of N aligned crops of one defect type) has √N less noise than one
crop, so the columns around the defect can be located to a fraction of a pm. The model is the
calibrated forward model on the crop: the defect's own column type at the centre, pristine
columns elsewhere; every column within `radius` Å of the defect gets a free displacement
(dx, dy), the defect column an amplitude, and the lattice (origin on the defect, rotation) a
global fit; columns further out stay on the ideal lattice and pin it. Displacements are
relative to that lattice, with 1σ from the inverse Hessian of the Gaussian likelihood (constant
noise variance, fitted: a class average's noise is nearly uniform).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.calibrate.model import (
    CALIBRATION_PHONONS,
    MICROSCOPE_PARAMETERS,
    build_setup,
    column_responses,
    render_signal,
)
from stemjax.calibrate.optimize import Minimisers

#: probe and lattice values taken from a Calibration (or given) and held fixed
FIXED = ("pixel_size_angstrom", "stretch", "shear", *MICROSCOPE_PARAMETERS)


@dataclasses.dataclass
class ColumnRefinement:
    """Result of `refine_columns`. columns: pandas DataFrame, one row per refined column:
    sublattice, x_A / y_A (ideal position relative to the defect, Å), distance_A, dx_pm /
    dy_pm (displacement, pm), sigma_pm (1σ per axis, pm, the larger of the two), radial_pm
    (displacement along the outward direction). rotation_rad, origin_px: fitted lattice.
    defect_amplitude: the defect column's response factor. model, image: (H, W)."""

    columns: object
    rotation_rad: float
    origin_px: np.ndarray
    defect_amplitude: float
    noise_sigma: float
    model: np.ndarray
    image: np.ndarray


def refine_columns(
    image,
    pixel_size: float,
    defect: str,
    *,
    specimen="wse2te",
    microscope="wse2te",
    probe: dict | None = None,
    rotation_rad: float | None = None,
    radius: float = 4.0,
    responses=None,
    frozen_phonons: int = CALIBRATION_PHONONS,
    oversampling: int | None = None,
    steps: tuple[int, int] = (300, 300),
) -> ColumnRefinement:
    """Displacements (pm) of the columns within `radius` Å of a defect in its class average.

    image: (H, W) class average, defect at the centre pixel ((H−1)/2, (W−1)/2), axis 0 = x;
    any units (scale and offset are fitted). pixel_size: Å/px of the average. defect: class
    name (e.g. "SV"). probe: fitted values from a `Calibration` (`cal.values`: Δf, C12, C21,
    source size, stretch, shear); default the microscope's nominal probe. rotation_rad: lattice
    rotation of the average (default: from its Bragg spots, `estimate_lattice`, trying the six
    60° alternatives). responses: from `column_responses(..., classes=(defect,))`. steps:
    (Adam, L-BFGS) iterations of the final fit (L-BFGS stops early once converged).
    """
    from stemjax.calibrate.fit import _resolve_inputs
    from stemjax.calibrate.lattice import estimate_lattice

    img, px, specimen, mic = _resolve_inputs(image, pixel_size, specimen, microscope)
    registry_names = [d.name for d in specimen.defects]
    if defect not in registry_names:
        raise ValueError(f"defect: {defect!r} is not a class of {specimen.name}: {registry_names}")
    sublattice = next(d.sublattice for d in specimen.defects if d.name == defect)
    if responses is None:
        responses, _ = column_responses(
            specimen, mic, px, classes=(defect,), frozen_phonons=frozen_phonons,
            oversampling=oversampling,
        )  # fmt: skip
    with jax.enable_x64(True):
        setup = build_setup(specimen, responses, mic, img.shape, max_pixel_size=px * 1.05)
        xy = setup.site_xy
        if sublattice == "chalcogen":
            xy = xy - setup.basis  # a chalcogen site at the lattice origin
        setup = dataclasses.replace(setup, site_xy=xy)
        centre_site = int(np.argmin(np.hypot(*xy.T)))
        dist = np.hypot(*xy.T)
        free = np.flatnonzero((dist <= radius) & (np.arange(len(xy)) != centre_site))
        site_class = np.zeros(len(xy), np.int32)
        site_class[centre_site] = 1
        turns = (0,) if rotation_rad is not None else range(6)
        if rotation_rad is None:
            rotation_rad = estimate_lattice(img, px, float(specimen.a))["rotation_rad"]
        base = {
            "origin_x_px": 0.5 * (img.shape[0] - 1),
            "origin_y_px": 0.5 * (img.shape[1] - 1),
            "rotation_rad": float(rotation_rad),
            "pixel_size_angstrom": px,
            "stretch": 0.0,
            "shear": 0.0,
            "defocus_angstrom": -float(mic.aberrations.C10),
            "c12_x_angstrom": 0.0,
            "c12_y_angstrom": 0.0,
            "c21_x_angstrom": 0.0,
            "c21_y_angstrom": 0.0,
            "source_size_angstrom": float(mic.source_size),
        }
        base.update({k: float(v) for k, v in (probe or {}).items() if k in FIXED})
        base["pixel_size_angstrom"] = px
        # the six-fold ambiguity of the Bragg-spot rotation: try θ + k·60°, keep the best
        y = jnp.asarray(img)
        n_free = len(free)
        free_idx = jnp.asarray(free)
        cls = jnp.asarray(site_class)
        to_px = 0.01 / px  # pm → px

        def unpack(theta, rot0):
            values = {k: jnp.asarray(v) for k, v in base.items()}
            values["origin_x_px"] = values["origin_x_px"] + 0.05 * theta[0]
            values["origin_y_px"] = values["origin_y_px"] + 0.05 * theta[1]
            values["rotation_rad"] = rot0 + 1e-3 * theta[2]
            disp_pm = theta[7 : 7 + 2 * n_free].reshape(n_free, 2)
            return values, disp_pm

        def mean_fn(theta, rot0):
            values, disp_pm = unpack(theta, rot0)
            offsets = jnp.zeros((len(xy), 2)).at[free_idx].set(disp_pm * to_px)
            amp = jnp.ones(len(xy)).at[centre_site].set(1.0 + 0.05 * theta[3])
            signal = render_signal(values, setup, site_class=cls, site_offsets_px=offsets,
                                   site_amplitude=amp)  # fmt: skip
            return theta[4] * signal / scale0 + theta[5]

        def nll(theta, rot0):
            mu = mean_fn(theta, rot0)
            log_sigma = theta[6]
            r2 = (y - mu) ** 2
            return 0.5 * jnp.sum(r2) * jnp.exp(-2 * log_sigma) + y.size * log_sigma

        def start_theta(rot0):
            theta = jnp.zeros(7 + 2 * n_free)
            values, _ = unpack(theta, rot0)
            sig = np.asarray(mean_fn(theta.at[4].set(scale0).at[5].set(0.0), rot0))
            a = np.stack([sig.ravel(), np.ones(sig.size)], 1)
            (s, o), *_ = np.linalg.lstsq(a, img.ravel(), rcond=None)
            resid = img.ravel() - a @ np.array([s, o])
            return theta.at[4].set(s * scale0).at[5].set(o).at[6].set(np.log(resid.std() + 1e-30))

        scale0 = 1.0
        probe_signal = np.asarray(render_signal({k: jnp.asarray(v) for k, v in base.items()},
                                                setup, site_class=cls))  # fmt: skip
        scale0 = float(np.abs(probe_signal).max()) or 1.0

        def loss(theta, rot0):
            return nll(theta, rot0) / y.size

        mini = Minimisers()  # one compilation for every turn and stage (rot0 is an argument)
        best = None
        for k in turns:
            rot0 = float(rotation_rad) + k * math.pi / 3
            theta, _ = mini.adam(loss, start_theta(rot0), 150, 0.05, args=(rot0,),
                                 final_fraction=0.02)  # fmt: skip
            value = float(nll(theta, rot0))
            if best is None or value < best[0]:
                best = (value, rot0, theta)
        _, rot0, theta = best
        theta, _ = mini.adam(loss, theta, steps[0], 0.05, args=(rot0,), final_fraction=0.02)
        if steps[1]:
            theta, _ = mini.lbfgs(loss, theta, steps[1], tol=1e-10, args=(rot0,))
        hess = np.asarray(jax.hessian(lambda t: nll(t, rot0))(theta))
        cov = np.linalg.pinv(hess)
        values, disp = unpack(theta, rot0)
        disp = np.asarray(disp)
        sig = np.sqrt(np.clip(np.diag(cov)[7:], 0, None)).reshape(n_free, 2)
        model = np.asarray(mean_fn(theta, rot0))
        # ideal positions relative to the defect, rotated into the image frame (Å)
        c, s = math.cos(float(values["rotation_rad"])), math.sin(float(values["rotation_rad"]))
        rel = xy[free] @ np.array([[c, -s], [s, c]]).T
        unit = rel / np.hypot(*rel.T)[:, None]
    import pandas as pd

    columns = pd.DataFrame(
        {
            "sublattice": np.where(setup.site_sublattice[free] == 0, "metal", "chalcogen"),
            "x_A": rel[:, 0],
            "y_A": rel[:, 1],
            "distance_A": np.hypot(*rel.T),
            "dx_pm": disp[:, 0],
            "dy_pm": disp[:, 1],
            "sigma_pm": sig.max(axis=1),
            "radial_pm": np.sum(disp * unit, axis=1),
        }
    ).sort_values("distance_A", ignore_index=True)
    return ColumnRefinement(
        columns=columns,
        rotation_rad=float(values["rotation_rad"]),
        origin_px=np.array([float(values["origin_x_px"]), float(values["origin_y_px"])]),
        defect_amplitude=1.0 + 0.05 * float(theta[3]),
        noise_sigma=math.exp(float(theta[6])),
        model=model,
        image=img,
    )
