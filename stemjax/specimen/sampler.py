"""Random defective specimens in JAX: fixed shapes, masked, jittable and vmappable.

`sample_specimen(key, layout, prior)` draws, per sample: an origin shift within one unit cell,
an in-plane rotation, a small strain, each site's class from the prior, and (optionally) per-atom
thermal displacements. Everything is a gather from the `Layout` tables plus elementwise maths;
no Python loop runs over sites or atoms.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from stemjax.specimen.layout import Layout
from stemjax.specimen.materials import SLOTS_PER_SITE


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Specimen:
    """One sampled specimen (add a leading batch axis under vmap).

    Atoms: N = 2 M slots, atom n on site n // 2. Box coordinates: x along the first box axis,
    y along the second, origin at a box corner, z above the metal plane; all in Å.
    """

    positions: jax.Array
    """(N, 3) float32 atom positions, Å, including thermal displacement."""
    numbers: jax.Array
    """(N,) int32 atomic numbers; 0 where `mask` is False."""
    mask: jax.Array
    """(N,) bool: a real atom of a site inside the box (or inside the layout's margin)."""
    site_xy: jax.Array
    """(M, 2) float32 projected site positions, Å, after shift/rotation/strain, before jitter."""
    site_class: jax.Array
    """(M,) int32 registry class id; 0 = pristine. Drawn for every site, valid or not."""
    site_sublattice: jax.Array
    """(M,) int32 index into `registry.sublattices`."""
    site_valid: jax.Array
    """(M,) bool: site inside the box [0, Lx) x [0, Ly); only these are labels."""
    rotation_rad: jax.Array
    """() float32 sampled in-plane rotation, radians."""
    strain: jax.Array
    """(2, 2) float32 sampled symmetric strain tensor (dimensionless)."""
    shift: jax.Array
    """(2,) float32 sampled origin shift, Å (lattice frame, before rotation)."""


def sample_specimen(key: jax.Array, layout: Layout, prior: str) -> Specimen:
    """Draw one random defective specimen of `layout`'s material and box under prior `prior`.

    `prior` is a static name (e.g. "train", "eval") resolved to a table index at trace time.
    The map from lattice to box coordinates is x_box = centre + (I + eps) R(theta) (x_lat + shift).
    """
    p = layout.prior_index(prior)
    n_sites = layout.site_xy.shape[0]
    # Two generator calls only (threefry dominates compile time): all uniforms, then normals.
    k_uniform, k_thermal = jax.random.split(key)
    u = jax.random.uniform(k_uniform, (6 + n_sites,))
    u_shift, u_rot, u_strain, u_class = u[0:2], u[2], u[3:6], u[6:]

    cell = jnp.asarray(layout.cell)
    shift = u_shift @ cell
    rot_lo, rot_hi = jnp.asarray(layout.rotation_range_rad)
    theta = rot_lo + (rot_hi - rot_lo) * u_rot
    e = (2.0 * u_strain - 1.0) * layout.strain_max
    strain = jnp.array([[e[0], e[2]], [e[2], e[1]]])
    c, s = jnp.cos(theta), jnp.sin(theta)
    transform = (jnp.eye(2) + strain) @ jnp.array([[c, -s], [s, c]])
    extent = jnp.asarray(layout.extent, jnp.float32)
    site_xy = (jnp.asarray(layout.site_xy) + shift) @ transform.T + 0.5 * extent

    # Inverse-CDF categorical draw: class = number of CDF entries <= u (zero-probability
    # classes have repeated entries and are skipped; the CDF reaches exactly 1).
    sub = jnp.asarray(layout.site_sublattice)
    cdf = jnp.asarray(layout.class_cdf)[p][sub]  # (M, C)
    site_class = jnp.sum(u_class[:, None] >= cdf, axis=-1, dtype=jnp.int32)

    numbers = jnp.asarray(layout.content_numbers)[sub, site_class]  # (M, SLOTS)
    z = jnp.asarray(layout.content_z)[sub, site_class]
    xy = jnp.broadcast_to(site_xy[:, None, :], (*numbers.shape, 2))
    positions = jnp.concatenate([xy, z[..., None]], axis=-1)  # (M, SLOTS, 3)
    if layout.thermal:
        rms = jnp.asarray(layout.content_rms)[sub, site_class]
        positions = positions + rms[..., None] * jax.random.normal(k_thermal, positions.shape)

    site_valid = jnp.all((site_xy >= 0) & (site_xy < extent), axis=-1)
    m = layout.margin
    kept = jnp.all((site_xy >= -m) & (site_xy < extent + m), axis=-1)
    mask = (numbers > 0) & kept[:, None]
    n_atoms = SLOTS_PER_SITE * site_xy.shape[0]
    return Specimen(
        positions=positions.reshape(n_atoms, 3).astype(jnp.float32),
        numbers=jnp.where(mask, numbers, 0).reshape(n_atoms).astype(jnp.int32),
        mask=mask.reshape(n_atoms),
        site_xy=site_xy.astype(jnp.float32),
        site_class=site_class,
        site_sublattice=sub,
        site_valid=site_valid,
        rotation_rad=theta.astype(jnp.float32),
        strain=strain.astype(jnp.float32),
        shift=shift.astype(jnp.float32),
    )


def species_index(specimen: Specimen, layout: Layout) -> jax.Array:
    """(N,) int32 index of each atom's element into `layout.species`, -1 where masked."""
    species = jnp.asarray(layout.species, jnp.int32)
    idx = jnp.argmax(specimen.numbers[..., None] == species, axis=-1).astype(jnp.int32)
    return jnp.where(specimen.mask, idx, -1)


def atom_site(layout: Layout) -> jax.Array:
    """(N,) int32 site index of each atom slot."""
    return jnp.arange(layout.num_atoms, dtype=jnp.int32) // SLOTS_PER_SITE
