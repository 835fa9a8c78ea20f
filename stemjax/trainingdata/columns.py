"""Column-response fast mode: ADF images assembled from per-column-type multislice responses.

ADF imaging of a monolayer is close to incoherent, so the image is approximately
I(r) = Σ_sites R_type(r − r_site): each column type's multislice response under the current
probe, placed at the column positions. Each response is exact multislice (channelling within the
column, frozen-phonon averaged) of one isolated column in a small periodic cell, computed with
the PRISM detector Gram matrix M_t (`stemjax.physics.prism`). M_t depends only on the column's
atoms, the beam energy and the detector, so it is computed once per configuration; the
aberrations, defocus and focal spread of each image enter through the probe coefficients c_b:

    R̂_t(q) = Σ_{b, b': k_b' − k_b = q} c_b c_b'* M_t,bb'      (a scatter over beam pairs)

and the image spectrum is Σ_t R̂_t(k) S_t(k) with S_t the exact structure factor of the type's
sites, evaluated only inside the image's band limit |k| < 2α/λ. Neglected: interference between
neighbouring columns' scattered waves and probe spreading between columns. The gap to full
multislice is measured in benchmarks/RESULTS.md.
"""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.physics.adf import (
    ADFGeometry,
    Microscope,
    plan_geometry,
    prism_beams,
    prism_gram,
    prism_probe_coefficients,
    transmission_functions,
)
from stemjax.physics.energy import wavelength


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class ColumnResponses:
    """Precomputed detector Gram matrices of every column type (arrays) and their static grids.

    gram: (T, B, B) complex64. pair_index: (B*B,) int32 flat index of q = k_b' − k_b on the
    response cell's n × n grid. type_of: (S, C) int32 column type of (sublattice, class).
    cell_gpts: n, the response cell's pixels per axis. pixel_size: output pixel (Å).
    geometry: the response cell's PRISM geometry. band_limit: largest spatial frequency (1/Å)
    kept when assembling images (2α/λ plus two cell pixels).
    """

    gram: jax.Array
    pair_index: jax.Array
    type_of: jax.Array
    cell_gpts: int = dataclasses.field(metadata=dict(static=True))
    pixel_size: float = dataclasses.field(metadata=dict(static=True))
    geometry: ADFGeometry = dataclasses.field(metadata=dict(static=True))
    band_limit: float = dataclasses.field(metadata=dict(static=True))

    @property
    def num_types(self) -> int:
        return int(self.gram.shape[0])


def column_types(layout):
    """Distinct column contents of a layout: list of (numbers, z) and the (S, C) type table."""
    numbers, zs = np.asarray(layout.content_numbers), np.asarray(layout.content_z)
    keys, type_of = {}, np.zeros(numbers.shape[:2], np.int32)
    for s in range(numbers.shape[0]):
        for c in range(numbers.shape[1]):
            key = tuple(
                (int(n), round(float(z), 4))
                for n, z in zip(numbers[s, c], zs[s, c], strict=True)
                if n > 0
            )
            key = tuple(sorted(key))
            type_of[s, c] = keys.setdefault(key, len(keys))
    return list(keys), type_of


def precompute_column_responses(
    layout,
    microscope: Microscope,
    *,
    pixel_size: float,
    cell_extent: float = 16.0,
    potential_sampling: float = 0.05,
    slice_thickness: float = 1.0,
    z_offset: float = 3.0,
    frozen_phonons: int = 4,
    max_semiangle: float | None = None,
    seed: int = 0,
    oversampling: int | None = None,
) -> ColumnResponses:
    """Gram matrices of each column type of `layout`'s material (host, once per config).

    microscope: supplies the (fixed) energy and detector angles, and the focal-spread nodes.
    pixel_size: output pixel (Å); the response cell is n × pixel_size ≥ cell_extent (Å).
    potential_sampling / slice_thickness (Å): the column cell's multislice grids.
    z_offset (Å): height of the metal plane above the entrance surface.
    frozen_phonons: thermal configurations averaged into each M_t (layout's per-slot rms).
    max_semiangle: largest convergence semiangle (mrad) the prior draws (sets the beam set).
    oversampling: phase-grating oversampling (None: the physics default, see plan_geometry).
    """
    n = int(math.ceil(cell_extent / pixel_size))
    extent = n * pixel_size
    types, type_of = column_types(layout)
    rms = np.asarray(layout.content_rms)
    rms_of_type = {}
    numbers_all, z_all = [], []
    for (s, c), t in np.ndenumerate(type_of):
        rms_of_type.setdefault(
            t,
            [r for r, num in zip(rms[s, c], layout.content_numbers[s, c], strict=True) if num > 0],
        )
    for key in types:
        numbers_all += [num for num, _ in key]
        z_all += [z + z_offset for _, z in key]
    if not numbers_all:
        raise ValueError("layout: no column type holds any atom")
    planning = microscope
    if max_semiangle is not None:
        planning = dataclasses.replace(microscope, semiangle_cutoff=float(max_semiangle))
    geometry = plan_geometry(
        (extent, extent),
        np.array(z_all),
        np.array(numbers_all),
        planning,
        potential_sampling=potential_sampling,
        slice_thickness=slice_thickness,
        scan_sampling=pixel_size,
        cell_thickness=2 * z_offset,
        method="prism",
        oversampling=oversampling,
    )
    beams = prism_beams(geometry)
    # Signed beam indices on the cell's reciprocal grid; q = k_b' − k_b on the n × n image grid.
    signed = np.where(beams > np.array(geometry.gpts) // 2, beams - np.array(geometry.gpts), beams)
    dq = signed[None, :, :] - signed[:, None, :]  # (B, B, 2): b' − b
    pair_index = (dq[..., 0] % n) * n + (dq[..., 1] % n)

    rng = np.random.default_rng(seed)
    micro64 = microscope.astype(jnp.float32)
    gram_fn = jax.jit(
        lambda p, z, m: prism_gram(
            transmission_functions(p, z, m, micro64.energy, geometry), micro64, geometry
        )
    )
    grams = []
    for t, key in enumerate(types):
        if not key:
            grams.append(np.zeros((len(beams), len(beams)), np.complex64))
            continue
        nums = np.array([num for num, _ in key], np.int32)
        base = np.array([[0.0, 0.0, z + z_offset] for _, z in key])
        sig = np.array(rms_of_type[t], np.float64)
        total = 0.0
        configs = max(1, int(frozen_phonons))
        for _ in range(configs):
            pos = base.copy()
            if frozen_phonons:
                pos[:, :2] += rng.normal(size=(len(key), 2)) * sig[:, None]
            pos[:, :2] %= extent
            total = total + gram_fn(
                jnp.asarray(pos, jnp.float32), jnp.asarray(nums), jnp.ones(len(nums), bool)
            )
        grams.append(np.asarray(total / configs))
    alpha = (float(planning.semiangle_cutoff) + float(planning.aperture_rolloff)) * 1e-3
    band = 2.0 * alpha / float(wavelength(float(microscope.energy))) + 2.0 / extent
    return ColumnResponses(
        gram=jnp.asarray(np.stack(grams)),
        pair_index=jnp.asarray(pair_index.reshape(-1), jnp.int32),
        type_of=jnp.asarray(type_of),
        cell_gpts=n,
        pixel_size=float(pixel_size),
        geometry=geometry,
        band_limit=float(band),
    )


def response_images(responses: ColumnResponses, microscope: Microscope):
    """Real-space responses R_t (T, n, n) of every column type, probe at the cell origin.

    Fraction of incident intensity vs probe position relative to the column (periodic cell).
    """
    coefficients, _ = prism_probe_coefficients(microscope, responses.geometry, responses.gram.dtype)
    outer = jnp.einsum("fb,fc->bc", coefficients, jnp.conj(coefficients))  # c_b c_b'*
    values = (outer[None] * responses.gram).reshape(responses.num_types, -1)
    n = responses.cell_gpts
    spectrum = jnp.zeros((responses.num_types, n * n), values.dtype)
    spectrum = spectrum.at[:, responses.pair_index].add(values).reshape(-1, n, n)
    return jnp.fft.ifft2(spectrum).real * (n * n)


def render_columns(
    responses: ColumnResponses, microscope: Microscope, site_xy, site_type, site_weight, canvas_gpts
):
    """ADF image (canvas_gpts) of columns at `site_xy` (M, 2) Å with types `site_type` (M,).

    site_weight: (M,) 0/1 (masked sites contribute nothing). The canvas is periodic with the
    response pixel size; axis 0 runs along x. Source-size blur is not applied here.
    """
    real = site_xy.dtype
    n = responses.cell_gpts
    hx, hy = canvas_gpts
    px = responses.pixel_size
    r = response_images(responses, microscope).astype(real)  # (T, n, n), column at origin
    # Embed the periodic, origin-centred response cell into the canvas, wrapped around 0
    # (summed where a cell larger than the canvas wraps onto itself: the canvas is periodic).
    h = n // 2
    cells = np.concatenate([np.arange(0, n - h), np.arange(-h, 0)])
    patch = jnp.zeros((r.shape[0], hx, hy), real)
    patch = patch.at[:, (cells % hx)[:, None], (cells % hy)[None, :]].add(
        r[:, (cells % n)[:, None], (cells % n)[None, :]]
    )
    # Low-frequency window: the ADF image is band-limited to 2α/λ.
    kx = np.fft.fftfreq(hx, px)
    ky = np.fft.fftfreq(hy, px)
    ix = np.flatnonzero(np.abs(kx) <= responses.band_limit)
    iy = np.flatnonzero(np.abs(ky) <= responses.band_limit)
    r_hat = jnp.fft.fft2(patch)[:, ix[:, None], iy[None, :]]  # (T, nx, ny)
    cdtype = r_hat.dtype
    ex = jnp.exp(-2j * jnp.pi * jnp.asarray(kx[ix], real)[:, None] * site_xy[None, :, 0])
    ey = jnp.exp(-2j * jnp.pi * site_xy[:, 1, None] * jnp.asarray(ky[iy], real)[None, :])
    onehot = (site_type[:, None] == jnp.arange(responses.num_types)[None, :]) * site_weight[:, None]
    ey_w = (onehot.astype(cdtype)[:, :, None] * ey.astype(cdtype)[:, None, :]).reshape(
        site_xy.shape[0], -1
    )
    structure = (ex.astype(cdtype) @ ey_w).reshape(len(ix), responses.num_types, len(iy))
    low = jnp.einsum("xty,txy->xy", structure, r_hat)
    spectrum = jnp.zeros((hx, hy), cdtype).at[ix[:, None], iy[None, :]].set(low)
    return jnp.fft.ifft2(spectrum).real
