"""`corrupt`: clean simulated ADF image → realistic, normalised micrograph, with labels moved by
the same scan distortion. Pure JAX, fixed shapes, jit/vmap-able; see `warp` for conventions."""

import jax
import jax.numpy as jnp

from stemjax.corrupt import noise, warp
from stemjax.corrupt.config import CorruptionConfig
from stemjax.corrupt.normalise import normalise_image


def corrupt(
    key: jax.Array,
    clean: jax.Array,
    points: jax.Array,
    cfg: CorruptionConfig,
    *,
    pixel_size,
    out_shape: tuple[int, int],
    dose_electrons_per_pixel=None,
) -> tuple[jax.Array, jax.Array, dict]:
    """Corrupt one clean image and warp its labels.

    key: PRNG key (one image). clean: (Hc, Wc) float32 ADF signal, fraction of the incident beam,
    on a canvas with margins (Hc − H)//2, (Wc − W)//2 px around the output (`warp.margins`).
    points: (P, 2) true label positions (row, col) in *output pixels* (clean px − margin; padded
    entries pass through harmlessly). cfg: priors, static under jit (hashable).
    pixel_size: Å per pixel (clean and output grids), may be traced. out_shape: (H, W), static.
    dose_electrons_per_pixel: incident e⁻/px from the microscope prior; None samples it from
    `cfg.noise` (probe current × dwell).

    Order of effects (physical): contamination is added to the specimen signal; the scan
    distortion samples it at the displaced probe positions; probe-current variation scales the
    dose per image and per line; electrons are counted (Poisson); the detector applies read-out
    noise, gain and offset; `normalise_image` standardises (if `cfg.normalise`).

    Returns (image (H, W) float32, warped_points (P, 2) output px, aux) with aux:
    raw (H, W) detector signal before normalisation; clean_warped (H, W) warped clean signal
    without contamination or noise (fraction of beam); displacement_px (H, W, 2);
    electrons_per_pixel (); inside (P,) bool, warped point within the image; point_residual_px
    (P,) |q + d(q) − x| of the label inversion; out_of_bounds_frac () share of samples that fell
    outside the clean canvas (margin too small if > 0); warp_params (`warp.WarpParams`).

    Use under jit as e.g. `jax.jit(partial(corrupt, cfg=cfg, pixel_size=ps, out_shape=(H, W)))`.
    """
    h, w = out_shape
    clean = jnp.asarray(clean, jnp.float32)
    points = jnp.asarray(points, jnp.float32)
    margin = warp.margins(clean.shape, out_shape)
    k_cont, k_warp, k_dose, k_cur, k_count, k_det_p, k_det = jax.random.split(key, 7)

    # specimen: clean signal + surface contamination (fraction of the beam)
    if cfg.contamination.amp_max_rel > 0:  # static: skip the FFTs when switched off
        clean_spec = clean + noise.sample_contamination(
            k_cont, cfg.contamination, clean.shape, pixel_size, jnp.mean(clean)
        )
    else:
        clean_spec = clean

    # geometry: sample the specimen at the displaced probe positions; move labels the same way
    params = warp.sample_params(k_warp, cfg.warp, pixel_size, out_shape)
    disp = warp.displacement_field(params, out_shape)
    order = cfg.warp.interp_order
    signal = warp.warp_image(clean_spec, disp, margin, order)
    q = warp.inverse_map(params, points, out_shape, cfg.warp.inverse_iterations)

    # counting: dose × probe-current variation → Poisson electrons → detector
    if dose_electrons_per_pixel is None:
        dose = noise.sample_electrons_per_pixel(k_dose, cfg.noise)
    else:
        dose = jnp.asarray(dose_electrons_per_pixel, jnp.float32)
    current = noise.probe_current_factors(k_cur, cfg.noise, h)
    expected = jnp.maximum(signal, 0.0) * dose * current[:, None]
    electrons = noise.poisson_counts(k_count, expected) if cfg.noise.poisson else expected
    gain, offset, read_rms = noise.sample_detector(k_det_p, cfg.noise)
    read_rms = read_rms if cfg.noise.detector_noise_rms_max_e > 0 else 0.0  # static skip
    raw = noise.detector_response(k_det, electrons, gain, offset, read_rms)
    image = normalise_image(raw) if cfg.normalise else raw

    coords = warp.pixel_grid(out_shape) + disp + jnp.asarray(margin, jnp.float32)
    hc, wc = clean.shape
    outside = (
        (coords[..., 0] < 0)
        | (coords[..., 0] > hc - 1)
        | (coords[..., 1] < 0)
        | (coords[..., 1] > wc - 1)
    )
    aux = dict(
        raw=raw,
        clean_warped=warp.warp_image(clean, disp, margin, order),
        displacement_px=disp,
        electrons_per_pixel=dose,
        inside=(q[..., 0] >= 0) & (q[..., 0] <= h - 1) & (q[..., 1] >= 0) & (q[..., 1] <= w - 1),
        point_residual_px=jnp.linalg.norm(warp.forward_map(params, q, out_shape) - points, axis=-1),
        out_of_bounds_frac=jnp.mean(outside.astype(jnp.float32)),
        warp_params=params,
    )
    return image.astype(jnp.float32), q, aux
