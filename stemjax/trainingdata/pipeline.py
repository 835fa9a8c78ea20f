"""`key → (images, targets)`: the on-device training-data function the training loop calls.

One jitted, fixed-shape function per configuration: sample a defective specimen (specimen
layer) and a microscope (microscope prior), simulate the clean ADF image on a canvas with a
margin (full multislice, or the column-response fast mode), corrupt it like real data while the
same warp moves the labels (corrupt layer), and render the per-pixel targets. `vmap` over the
batch; nothing leaves the device.
"""

import dataclasses
import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.corrupt import CorruptionConfig, corrupt
from stemjax.microscope_prior import MicroscopePrior, planning_microscope, sample_microscope
from stemjax.physics.adf import adf_image, plan_geometry, source_blur
from stemjax.physics.energy import wavelength
from stemjax.physics.probe import aberration_phase_rms
from stemjax.specimen import build_layout, sample_specimen
from stemjax.trainingdata.columns import precompute_column_responses, render_columns
from stemjax.trainingdata.targets import render_class_map, render_heatmaps

SIMULATION_MODES = ("auto", "columns", "multislice")
TARGET_FORMS = ("disk", "gaussian")


@dataclass
class DataConfig:
    """Shapes and modes of the training data (Hydra schema; converted to `DataSpec` once).

    image_size_px: output images are square, this many px. margin_px: extra simulated canvas on
    each side (px), absorbs the scan warp and the periodic seam. batch_size: images per call.
    simulation: 'columns' (fast, incoherent assembly of multislice column responses) or
    'multislice' (full multislice of every image; the reference, GPU). prior: specimen prior
    name ('train' or 'eval'). target: 'disk' (class map) or 'gaussian' (heatmaps);
    target_radius_px: disk radius or Gaussian σ (px). potential_sampling / slice_thickness (Å):
    multislice grids. column_cell_angstrom: response cell size (Å); column_phonons: frozen-
    phonon configurations averaged into each column response. z_offset_angstrom: height of the
    metal plane above the entrance surface (Å).
    """

    image_size_px: int = 256
    margin_px: int = 24
    batch_size: int = 8
    simulation: str = "auto"
    prior: str = "train"
    target: str = "disk"
    target_radius_px: float = 2.5
    potential_sampling: float = 0.05
    slice_thickness: float = 1.0
    column_cell_angstrom: float = 16.0
    column_phonons: int = 4
    z_offset_angstrom: float = 3.0
    edge_targets: bool = True


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch (leading axis B). images: (B, H, W) float32 normalised. targets: (B, H, W) int32
    class map or (B, C, H, W) float32 heatmaps. points: (B, M, 2) label positions (row, col) in
    output px (row = axis 0 = x). classes: (B, M) int32 registry ids (0 = pristine site).
    sublattice: (B, M) int32. valid: (B, M) bool, the site is inside the output image.
    clean: (B, H, W) warped clean signal (fraction of beam, no noise). dose: (B,) e⁻/px.

    The image's microscope draw, for binning scores by it: defocus: (B,) Δf in Å (= −C10).
    source_size: (B,) Gaussian source-size blur, 1σ in Å. c12: (B,) two-fold astigmatism
    magnitude |C12| in Å. c23: (B,) three-fold astigmatism magnitude |C23| in Å. phase_rms:
    (B,) rms aberration phase over the probe aperture in rad, piston and tilt removed
    (`physics.aberration_phase_rms`: every aberration in one number)."""

    images: jax.Array
    targets: jax.Array
    points: jax.Array
    classes: jax.Array
    sublattice: jax.Array
    valid: jax.Array
    clean: jax.Array
    dose: jax.Array
    defocus: jax.Array
    source_size: jax.Array
    c12: jax.Array
    c23: jax.Array
    phase_rms: jax.Array


@dataclasses.dataclass(frozen=True)
class BatchMaker:
    """Host-side plan of a configuration; `make_batch(key)` is its jitted device function."""

    layout: object
    microscope_prior: MicroscopePrior
    corruption: CorruptionConfig
    data: DataConfig
    pixel_size: float
    canvas_px: int
    responses: object = None
    geometry: object = None

    @property
    def registry(self):
        return self.layout.registry

    @functools.cached_property
    def make_batch(self):
        """Jitted `key → Batch`, compiled once for this configuration."""
        return jax.jit(self._batch)

    def _batch(self, key, sharding=None):
        """Batch for `key` (traceable). sharding: optional `NamedSharding` splitting the leading
        (batch) axis over devices: each device then simulates only its own examples. The
        examples depend on (key, index) only, so the data are the same for any device count."""
        keys = jax.random.split(key, self.data.batch_size)
        if sharding is not None:
            keys = jax.lax.with_sharding_constraint(keys, sharding)
        batch = jax.vmap(self._sample)(keys)
        if sharding is not None:
            batch = jax.lax.with_sharding_constraint(batch, sharding)
        return batch

    def example_keys(self, key):
        """(specimen, microscope, corruption) keys of one example's key. A hook: a subclass can
        redraw one stage and keep the others (e.g. new noise on the same specimen)."""
        return tuple(jax.random.split(key, 3))

    def draw_microscope(self, key):
        """`(Microscope, dose e⁻/px)` of one example from its microscope key. A hook: a subclass
        can change one quantity of the draw and keep every other (one cause at a time)."""
        return sample_microscope(key, self.microscope_prior)

    def microscope(self, key, index: int = 0):
        """The microscope draw `(Microscope, dose e⁻/px)` of example `index` of `make_batch(key)`
        (host-side, e.g. to report every aberration of one image)."""
        k = jax.random.split(key, self.data.batch_size)[index]
        return self.draw_microscope(self.example_keys(k)[1])

    def _sample(self, key):
        data, px = self.data, self.pixel_size
        k_spec, k_mic, k_cor = self.example_keys(key)
        specimen = sample_specimen(k_spec, self.layout, data.prior)
        microscope, dose = self.draw_microscope(k_mic)
        canvas = (self.canvas_px, self.canvas_px)
        if data.simulation == "columns":
            site_type = self.responses.type_of[specimen.site_sublattice, specimen.site_class]
            inside = jnp.all((specimen.site_xy >= 0) & (specimen.site_xy < self.canvas_px * px), -1)
            clean = render_columns(
                self.responses,
                microscope,
                specimen.site_xy,
                site_type,
                inside.astype(jnp.float32),
                canvas,
            )
            clean = source_blur(clean, microscope.source_size, (px, px))
        else:
            positions = specimen.positions + jnp.array([0.0, 0.0, data.z_offset_angstrom])
            clean = adf_image(positions, specimen.numbers, specimen.mask, microscope, self.geometry)
        clean = jnp.maximum(clean, 0.0)
        points = specimen.site_xy / px - data.margin_px
        out = (data.image_size_px, data.image_size_px)
        image, warped, aux = corrupt(
            k_cor,
            clean,
            points,
            self.corruption,
            pixel_size=px,
            out_shape=out,
            dose_electrons_per_pixel=dose,
        )
        valid = aux["inside"]
        # Sites off the simulated canvas have no atoms; the renderers drop off-image pixels.
        painted = specimen.site_valid if data.edge_targets else valid
        if data.target == "disk":
            targets = render_class_map(
                warped, specimen.site_class, painted, out, data.target_radius_px
            )
        else:
            targets = render_heatmaps(
                warped,
                specimen.site_class,
                painted,
                out,
                self.registry.num_classes,
                data.target_radius_px,
            )
        return Batch(
            images=image,
            targets=targets,
            points=warped,
            classes=specimen.site_class,
            sublattice=specimen.site_sublattice,
            valid=valid,
            clean=aux["clean_warped"],
            dose=jnp.asarray(aux["electrons_per_pixel"]),
            defocus=-microscope.aberrations.C10,
            source_size=microscope.source_size,
            c12=jnp.abs(microscope.aberrations.C12),
            c23=jnp.abs(microscope.aberrations.C23),
            phase_rms=aberration_phase_rms(
                microscope.semiangle_cutoff, wavelength(microscope.energy), microscope.aberrations
            ),
        )


def build_batch_maker(
    specimen_cfg, microscope_prior: MicroscopePrior, corruption: CorruptionConfig, data: DataConfig
) -> BatchMaker:
    """Plan a configuration on the host: layout, and column responses or multislice grids.

    Raises ValueError naming the field when a choice is unknown or the grids cannot represent
    the prior (e.g. a detector angle beyond the potential's band limit).
    """
    if data.simulation not in SIMULATION_MODES:
        raise ValueError(
            f"data.simulation: expected one of {SIMULATION_MODES}, got {data.simulation!r}"
        )
    if data.target not in TARGET_FORMS:
        raise ValueError(f"data.target: expected one of {TARGET_FORMS}, got {data.target!r}")
    if data.image_size_px <= 0 or data.margin_px < 0 or data.batch_size <= 0:
        raise ValueError("data: image_size_px and batch_size must be positive, margin_px >= 0")
    if data.simulation == "auto":
        mode = "multislice" if jax.default_backend() != "cpu" else "columns"
        data = dataclasses.replace(data, simulation=mode)
    px = float(microscope_prior.pixel_size_angstrom)
    canvas = data.image_size_px + 2 * data.margin_px
    layout = build_layout(specimen_cfg, (canvas * px, canvas * px))
    planning = planning_microscope(microscope_prior)
    if data.simulation == "columns":
        for name in ("energy_ev", "detector_inner_mrad", "detector_outer_mrad"):
            low, high = getattr(microscope_prior, name).bounds()
            if low != high:
                raise ValueError(
                    f"microscope.{name}: the 'columns' simulation precomputes column responses "
                    f"for one {name}; give it zero spread or use data.simulation=multislice"
                )
        responses = precompute_column_responses(
            layout,
            planning,
            pixel_size=px,
            cell_extent=data.column_cell_angstrom,
            potential_sampling=data.potential_sampling,
            slice_thickness=data.slice_thickness,
            z_offset=data.z_offset_angstrom,
            frozen_phonons=data.column_phonons,
            max_semiangle=float(planning.semiangle_cutoff),
        )
        return BatchMaker(
            layout, microscope_prior, corruption, data, px, canvas, responses=responses
        )
    z = np.asarray(layout.content_z).reshape(-1) + data.z_offset_angstrom
    numbers = np.asarray(layout.content_numbers).reshape(-1)
    keep = numbers > 0
    geometry = plan_geometry(
        (canvas * px, canvas * px),
        z[keep],
        numbers[keep],
        planning,
        potential_sampling=data.potential_sampling,
        slice_thickness=data.slice_thickness,
        scan_sampling=px,
        cell_thickness=2 * data.z_offset_angstrom,
        method="multislice",
    )
    return BatchMaker(layout, microscope_prior, corruption, data, px, canvas, geometry=geometry)
