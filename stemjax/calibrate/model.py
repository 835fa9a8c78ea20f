"""Forward model of a micrograph of a pristine 2H lattice: geometry, probe, intensity, noise.

The expected detector signal of image pixel u = (row, col) is

    μ(u) = gain · (dose · (I(u) + B(u))) + offset,      var(u) = gain² · (dose · (I + B) + r²)

I: the ADF image (fraction of the beam) of the lattice's columns under the fitted probe,
assembled from multislice column responses (`stemjax.trainingdata.columns`, the training data's
own simulator), blurred by the Gaussian source. B: a smooth background (fraction of the beam),
products of Legendre polynomials without the constant term (the offset holds the constant).
dose: incident electrons per pixel; gain: detector units per electron; offset: detector units;
r: read noise (electrons rms): the detector model of `stemjax.corrupt.noise`, so mean and
variance separate dose from gain.

Geometry: lattice position x (Å, lattice frame, origin on a metal site) lands on image pixel

    u = origin + (1 / p) · [[1 + η, γ], [γ, 1 − η]] · R(θ) · x

p: mean pixel size (Å/px); θ: in-plane rotation (rad); η, γ: the scan's affine distortion
(anisotropic scale and shear, dimensionless). Axis 0 of the image (rows) is x, as everywhere in
stemjax. Column responses are sampled at the response pixel size (the initial estimate of p):
positions follow the fitted geometry exactly, the shape of each column's response is not
rescaled by the (small) remaining difference between p and the response pixel size.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from numpy.polynomial import legendre

from stemjax.physics.adf import Microscope, source_blur
from stemjax.specimen import build_layout
from stemjax.specimen.materials import SpecimenConfig
from stemjax.trainingdata.columns import ColumnResponses, precompute_column_responses

#: The probe's fitted scalars (units in `UNITS`): what a calibration hands to the simulator.
MICROSCOPE_PARAMETERS = (
    "defocus_angstrom",
    "c12_x_angstrom",
    "c12_y_angstrom",
    "c21_x_angstrom",
    "c21_y_angstrom",
    "source_size_angstrom",
)
#: Names of the fitted scalars, in the order of the parameter vector (units in `UNITS`).
PARAMETERS = (
    "origin_x_px",
    "origin_y_px",
    "rotation_rad",
    "pixel_size_angstrom",
    "stretch",
    "shear",
    *MICROSCOPE_PARAMETERS,
    "dose_electrons_per_px",
    "gain",
    "offset",
    "read_noise_electrons",
)
UNITS = {
    "origin_x_px": "px",
    "origin_y_px": "px",
    "rotation_rad": "rad",
    "pixel_size_angstrom": "Å/px",
    "stretch": "1",
    "shear": "1",
    "defocus_angstrom": "Å",
    "c12_x_angstrom": "Å",
    "c12_y_angstrom": "Å",
    "c21_x_angstrom": "Å",
    "c21_y_angstrom": "Å",
    "source_size_angstrom": "Å",
    "dose_electrons_per_px": "e⁻/px",
    "gain": "detector units/e⁻",
    "offset": "detector units",
    "read_noise_electrons": "e⁻",
}
#: Depth (Å) of the metal plane below the entrance surface in the column-response simulations:
#: the defocus is referred to the entrance surface, so a reference simulation must use it too.
METAL_PLANE_DEPTH_A = 3.0
#: Quantities fitted on a log scale (positive by construction).
LOG_PARAMETERS = frozenset({"pixel_size_angstrom", "dose_electrons_per_px", "gain"})
#: Quantities that enter only squared (the read noise r through its variance r², e⁻²), fitted as
#: a signed value and reported as |r|: smooth through r = 0, where a detector whose noise is all
#: shot noise times a gain ends. On a log scale the gradient of a small r vanishes (∂var/∂ln r =
#: 2g²r²) and the fit gets stuck; fitted as r² ≥ 0 the likelihood has a kink at 0, where L-BFGS
#: stalls and the Newton polish sees a step it cannot take (found on a real micrograph).
SIGN_FREE_PARAMETERS = frozenset({"read_noise_electrons"})


def polar_aberrations(values: dict) -> dict:
    """C12/φ12 and C21/φ21 (Å, rad) from the Cartesian fit parameters.

    χ holds C12 cos(2(φ − φ12)) = c12x cos 2φ + c12y sin 2φ and C21 cos(φ − φ21) = c21x cos φ
    + c21y sin φ, so C12 = |c12|, φ12 = atan2(c12y, c12x) / 2 ∈ [0, π), likewise for C21.
    """
    c12x, c12y = values["c12_x_angstrom"], values["c12_y_angstrom"]
    c21x, c21y = values["c21_x_angstrom"], values["c21_y_angstrom"]
    return {
        "C12": float(math.hypot(c12x, c12y)),
        "phi12": float(math.atan2(c12y, c12x) / 2 % math.pi),
        "C21": float(math.hypot(c21x, c21y)),
        "phi21": float(math.atan2(c21y, c21x) % (2 * math.pi)),
    }


def lattice_matrix(values) -> jax.Array:
    """(2, 2) map from lattice-frame Å to image px: (1/p) · [[1+η, γ], [γ, 1−η]] · R(θ)."""
    c, s = jnp.cos(values["rotation_rad"]), jnp.sin(values["rotation_rad"])
    rot = jnp.array([[c, -s], [s, c]])
    eta, gam = values["stretch"], values["shear"]
    stretch = jnp.array([[1.0 + eta, gam], [gam, 1.0 - eta]])
    return stretch @ rot / values["pixel_size_angstrom"]


@dataclasses.dataclass(frozen=True)
class LatticeSetup:
    """Host-side, once-per-image tables of the forward model (hashable by identity).

    image_shape: (H, W) px. margin_px: canvas margin on every side (≥ half a response cell).
    site_xy: (M, 2) lattice-frame positions (Å) of the metal and chalcogen sites covering the
    image for any rotation; site_type: (M,) column type of each (pristine content); site_class
    (M,) registry class id used for rendering (0 = pristine). responses: column responses at
    pixel `responses.pixel_size` (Å). microscope: the fixed part of the probe (energy, angles,
    Cs, C23 ...); the fitted aberrations replace C10, C12, φ12, C21, φ21. background_order:
    highest total degree of the Legendre background. sublattice: (M,) 0 = metal, 1 = chalcogen.
    """

    image_shape: tuple[int, int]
    margin_px: int
    site_xy: np.ndarray
    site_sublattice: np.ndarray
    responses: ColumnResponses
    microscope: Microscope
    background_order: int
    specimen_name: str
    lattice_constant: float
    basis: np.ndarray

    __hash__ = object.__hash__
    __eq__ = object.__eq__

    @property
    def canvas_shape(self) -> tuple[int, int]:
        return tuple(n + 2 * self.margin_px for n in self.image_shape)

    @property
    def num_background(self) -> int:
        d = self.background_order
        return (d + 1) * (d + 2) // 2 - 1


CALIBRATION_PHONONS = 32
"""Default frozen-phonon configurations of the column responses that calibration and local
refinement fit with. On full-multislice micrographs averaging 32 configurations
(benchmarks/RESULTS.md, calibration of full-multislice micrographs), responses of 8
configurations biased Δf by 2.5–5 Å (4–8σ) and picked the mirrored (−Δf) basin by 15 NLL;
with 32, every error was within 3σ. Cost ≈ 6 s per configuration for 4 column types on the
2-core CPU; compute once per session and pass `responses=`."""


def column_responses(
    specimen: SpecimenConfig,
    microscope: Microscope,
    pixel_size: float,
    *,
    classes: tuple[str, ...] = (),
    frozen_phonons: int = CALIBRATION_PHONONS,
    oversampling: int | None = None,
    cell_extent: float = 16.0,
    potential_sampling: float = 0.05,
    z_offset: float = METAL_PLANE_DEPTH_A,
) -> tuple[ColumnResponses, tuple[str, ...]]:
    """Multislice responses of the pristine columns and of `classes` (defect names), sampled at
    `pixel_size` (Å). Returns the responses (type_of indexed [sublattice, k], k = 0 pristine,
    k = 1.. the requested classes in order) and the class names. Cost: a few seconds per column
    type and frozen phonon on a CPU (the 0.006 Å phase grating dominates; `oversampling`
    lowers it for tests).
    """
    layout = build_layout(specimen, (4 * cell_extent, 4 * cell_extent))
    registry = layout.registry
    ids = [0] + [registry.id(name) for name in classes]
    reduced = dataclasses.replace(
        layout,
        content_numbers=layout.content_numbers[:, ids],
        content_z=layout.content_z[:, ids],
        content_rms=layout.content_rms[:, ids],
    )
    responses = precompute_column_responses(
        reduced,
        microscope,
        pixel_size=pixel_size,
        cell_extent=cell_extent,
        potential_sampling=potential_sampling,
        z_offset=z_offset,
        frozen_phonons=frozen_phonons,
        oversampling=oversampling,
    )
    return responses, ("none", *classes)


def build_setup(
    specimen: SpecimenConfig,
    responses: ColumnResponses,
    microscope: Microscope,
    image_shape: tuple[int, int],
    *,
    max_pixel_size: float,
    background_order: int = 2,
) -> LatticeSetup:
    """Sites covering an image of `image_shape` px for any rotation and pixel size ≤
    `max_pixel_size` (Å), with a canvas margin of half a response cell."""
    margin = responses.cell_gpts // 2 + 2
    extent = [(n + 2 * margin) * max_pixel_size for n in image_shape]
    layout = build_layout(specimen, tuple(extent))
    from stemjax.specimen.materials import unit_cell

    cell = unit_cell(specimen)
    basis = np.asarray(cell.positions[1, :2] - cell.positions[0, :2], np.float64)
    return LatticeSetup(
        image_shape=tuple(int(n) for n in image_shape),
        margin_px=int(margin),
        site_xy=np.asarray(layout.site_xy, np.float64),
        site_sublattice=np.asarray(layout.site_sublattice, np.int32),
        responses=responses,
        microscope=microscope,
        background_order=int(background_order),
        specimen_name=specimen.name,
        lattice_constant=float(specimen.a),
        basis=basis,
    )


def legendre_basis(shape: tuple[int, int], order: int) -> np.ndarray:
    """(K, H, W) products P_i(x) P_j(y), 1 ≤ i + j ≤ order, x and y scaled to [−1, 1]."""
    xs = [np.linspace(-1.0, 1.0, n) for n in shape]
    out = []
    for total in range(1, order + 1):
        for i in range(total + 1):
            j = total - i
            px = legendre.legval(xs[0], np.eye(order + 1)[i])
            py = legendre.legval(xs[1], np.eye(order + 1)[j])
            out.append(px[:, None] * py[None, :])
    return np.stack(out) if out else np.zeros((0, *shape))


def site_pixels(values, setup: LatticeSetup) -> jax.Array:
    """(M, 2) image px (row, col) of every site under the fitted geometry."""
    m = lattice_matrix(values)
    origin = jnp.stack([values["origin_x_px"], values["origin_y_px"]])
    return jnp.asarray(setup.site_xy) @ m.T + origin


def probe_microscope(values, setup: LatticeSetup) -> Microscope:
    """The fixed microscope of `setup` with the fitted probe parameters (`fitted_microscope`)."""
    return fitted_microscope(values, setup.microscope)


def fitted_microscope(values, base: Microscope) -> Microscope:
    """`base` (energy, angles, Cs, C23 ...) with C10 = −Δf, C12, φ12, C21, φ21 and the source size
    of `values` (the `MICROSCOPE_PARAMETERS`, units in `UNITS`): the probe a calibration
    describes, for the simulator."""
    dtype = jnp.asarray(values["defocus_angstrom"]).dtype
    base = base.astype(dtype)
    c12x, c12y = values["c12_x_angstrom"], values["c12_y_angstrom"]
    c21x, c21y = values["c21_x_angstrom"], values["c21_y_angstrom"]
    # Cartesian → polar; the tiny epsilon keeps the gradient of |c| finite at c = 0.
    aberrations = dataclasses.replace(
        base.aberrations,
        C10=-values["defocus_angstrom"],
        C12=jnp.sqrt(c12x**2 + c12y**2 + 1e-12),
        phi12=0.5 * jnp.arctan2(c12y, c12x + 1e-12),
        C21=jnp.sqrt(c21x**2 + c21y**2 + 1e-12),
        phi21=jnp.arctan2(c21y, c21x + 1e-12),
    )
    return dataclasses.replace(
        base, aberrations=aberrations, source_size=values["source_size_angstrom"]
    )


def render_signal(
    values, setup: LatticeSetup, site_class=None, site_offsets_px=None, site_amplitude=None
):
    """ADF image I (H, W) in fraction of the beam: columns at the fitted sites, source blur.

    site_class: optional (M,) response-type column index k (0 = pristine) per site.
    site_offsets_px: optional (M, 2) extra displacement of each site (image px).
    site_amplitude: optional (M,) factor on each site's response (defect columns in a fit).
    """
    from stemjax.trainingdata.columns import render_columns

    responses = setup.responses
    px_resp = responses.pixel_size
    uv = site_pixels(values, setup)
    if site_offsets_px is not None:
        uv = uv + site_offsets_px
    canvas = setup.canvas_shape
    m = setup.margin_px
    inside = jnp.all((uv > -m) & (uv < jnp.array(setup.image_shape) + m), axis=-1)
    weight = inside.astype(uv.dtype)
    if site_amplitude is not None:
        weight = weight * site_amplitude
    k = jnp.zeros(uv.shape[0], jnp.int32) if site_class is None else site_class
    site_type = responses.type_of[jnp.asarray(setup.site_sublattice), k]
    microscope = probe_microscope(values, setup)
    clean = render_columns(responses, microscope, (uv + m) * px_resp, site_type, weight, canvas)
    # Source blur in image px: σ (Å) over the fitted pixel size (Å/px).
    sigma_px = values["source_size_angstrom"] / values["pixel_size_angstrom"]
    clean = source_blur(clean, sigma_px, (1.0, 1.0))
    return clean[m : m + setup.image_shape[0], m : m + setup.image_shape[1]]


def expected_signal(values, background, setup: LatticeSetup, basis, **render_kwargs):
    """(mean μ, variance) of the detector signal (detector units), each (H, W)."""
    signal = render_signal(values, setup, **render_kwargs)
    if basis.shape[0]:
        signal = signal + jnp.tensordot(background, basis, axes=1)
    electrons = values["dose_electrons_per_px"] * jnp.maximum(signal, 0.0)
    gain = values["gain"]
    mean = gain * electrons + values["offset"]
    var = gain**2 * (electrons + values["read_noise_electrons"] ** 2)
    return mean, var
