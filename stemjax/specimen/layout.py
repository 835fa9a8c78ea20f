"""Host-side, once-per-(material, field size) tables that the JAX sampler indexes.

`build_layout` fixes the lattice sites (a disk around the box centre large enough for any
rotation, origin shift and strain), the per-(sublattice, class) atom content tables and the
prior probability tables. All arrays are NumPy; the sampler only gathers from them, so shapes
are static and nothing depends on the random draws.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np
from ase.data import atomic_numbers

from stemjax.specimen.materials import SLOTS_PER_SITE, SUBLATTICES, SpecimenConfig, unit_cell
from stemjax.specimen.registry import DefectRegistry, prior_tables


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Layout:
    """Static description of what `sample_specimen` draws from.

    Sites are indexed m = 0..M-1, atom slots n = 0..N-1 with N = SLOTS_PER_SITE * M and atom n
    belonging to site n // SLOTS_PER_SITE. Class tables are indexed [sublattice, class id, slot].
    """

    site_xy: np.ndarray
    """(M, 2) float32 lattice site positions, Å, relative to the box centre, lattice origin at
    the centre, before shift/rotation/strain."""
    site_sublattice: np.ndarray
    """(M,) int32 index into `registry.sublattices`."""
    cell: np.ndarray
    """(2, 2) float32 primitive vectors a1, a2 (rows), Å: the origin shift is u a1 + v a2."""
    content_numbers: np.ndarray
    """(S, C, SLOTS) int32 atomic number per slot; 0 = empty slot. Class 0 = pristine content."""
    content_z: np.ndarray
    """(S, C, SLOTS) float32 height above the metal plane, Å."""
    content_rms: np.ndarray
    """(S, C, SLOTS) float32 per-axis thermal rms displacement of each slot's atom, Å."""
    class_probs: np.ndarray
    """(P, S, C) float32 probability of each class id per sublattice, for each prior."""
    class_cdf: np.ndarray
    """(P, S, C) float32 cumulative `class_probs` along C, exactly 1 from the last class with
    nonzero probability on (for the sampler's inverse-CDF draw)."""
    rotation_range_rad: np.ndarray
    """(2,) float32 uniform rotation range, radians."""
    strain_max: np.ndarray
    """() float32 bound on each strain component eps_xx, eps_yy, eps_xy. The site disk is sized
    for the configured value: it may be lowered (dataclasses.replace), never raised."""
    extent: tuple[float, float] = dataclasses.field(metadata=dict(static=True))
    """Box size (Lx, Ly), Å. The box is [0, Lx) x [0, Ly)."""
    margin: float = dataclasses.field(metadata=dict(static=True))
    """Atoms of sites within this distance (Å) outside the box are kept (mask True)."""
    thermal: bool = dataclasses.field(metadata=dict(static=True))
    """Whether the sampler adds thermal displacements."""
    prior_names: tuple[str, ...] = dataclasses.field(metadata=dict(static=True))
    registry: DefectRegistry = dataclasses.field(metadata=dict(static=True))
    species: tuple[int, ...] = dataclasses.field(metadata=dict(static=True))
    """Sorted atomic numbers of all elements the material can contain."""
    name: str = dataclasses.field(metadata=dict(static=True))

    @property
    def num_sites(self) -> int:
        return int(self.site_xy.shape[0])

    @property
    def num_atoms(self) -> int:
        return SLOTS_PER_SITE * self.num_sites

    def prior_index(self, prior: str) -> int:
        """Static index of a named prior; ValueError listing the known ones."""
        if prior not in self.prior_names:
            raise ValueError(
                f"unknown prior {prior!r} for specimen {self.name!r}; "
                f"known: {list(self.prior_names)}"
            )
        return self.prior_names.index(prior)


def coverage_radius(
    extent_xy: tuple[float, float], a: float, strain_max: float, margin: float = 0.0
) -> float:
    """Smallest radius (Å) of the site disk that holds every site that can land in the box.

    A site s lands at centre + (I + eps) R (s + shift). Inside the (margin-expanded) box,
    |(I + eps) R (s + shift)| <= R_box; the operator norm of (I + eps)^-1 is <= 1/(1 - 2 e) for
    |eps_ij| <= e, and |shift| <= a for a shift within the 120° primitive cell, so
    |s| <= R_box / (1 - 2 e) + a. Sites further out can never be in the box.
    """
    r_box = 0.5 * math.hypot(extent_xy[0] + 2 * margin, extent_xy[1] + 2 * margin)
    return r_box / (1.0 - 2.0 * strain_max) + a + 1e-3


def _slot_table(slots, rms: dict[str, float]) -> tuple[list[int], list[float], list[float]]:
    numbers = [atomic_numbers[s.element] for s in slots]
    z = [float(s.z) for s in slots]
    sig = [float(rms[s.element]) for s in slots]
    pad = SLOTS_PER_SITE - len(slots)
    return numbers + [0] * pad, z + [0.0] * pad, sig + [0.0] * pad


def build_layout(
    cfg: SpecimenConfig,
    extent_xy_angstrom: tuple[float, float],
    *,
    margin_angstrom: float = 0.0,
    thermal: bool | None = None,
    source: str = "specimen config",
) -> Layout:
    """Tables for sampling specimens of `cfg` in a box of `extent_xy_angstrom` (Lx, Ly), Å.

    `margin_angstrom` keeps atoms of sites up to that far outside the box (for simulators that
    want the potential of neighbours across the edge; labels still use only inside sites).
    `thermal` overrides `cfg.sampling.thermal`.
    """
    registry = DefectRegistry.from_config(cfg, source)
    tables = prior_tables(cfg, registry, source)
    lx, ly = (float(v) for v in extent_xy_angstrom)
    if not (lx > 0 and ly > 0 and margin_angstrom >= 0):
        raise ValueError(f"extent {extent_xy_angstrom} Å must be positive, margin >= 0")

    atoms = unit_cell(cfg)
    cell = np.asarray(atoms.cell[:2, :2], np.float64)
    basis = np.asarray([atoms.positions[0, :2], atoms.positions[1, :2]])  # metal, chalcogen
    radius = coverage_radius((lx, ly), cfg.a, cfg.sampling.strain_max, margin_angstrom)
    n = int(math.ceil(2 * radius / (math.sqrt(3) * cfg.a))) + 2
    ij = np.stack(np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij"), -1)
    lattice = ij.reshape(-1, 2) @ cell  # (L, 2) lattice points, Å
    xy = (lattice[None] + basis[:, None]).reshape(-1, 2)  # sublattice-major
    sub = np.repeat(np.arange(len(basis)), len(lattice))
    keep = np.hypot(xy[:, 0], xy[:, 1]) <= radius
    xy, sub = xy[keep], sub[keep]
    order = np.lexsort((xy[:, 0], xy[:, 1], sub))  # deterministic: sublattice, then y, then x
    xy, sub = xy[order], sub[order]

    n_sub, n_cls = len(SUBLATTICES), registry.num_classes
    numbers = np.zeros((n_sub, n_cls, SLOTS_PER_SITE), np.int32)
    z = np.zeros((n_sub, n_cls, SLOTS_PER_SITE), np.float32)
    rms = np.zeros((n_sub, n_cls, SLOTS_PER_SITE), np.float32)
    for s, pristine in enumerate((cfg.metal, cfg.chalcogen)):
        numbers[s, 0], z[s, 0], rms[s, 0] = _slot_table(pristine, cfg.thermal_rms)
    for d in cfg.defects:
        s, c = SUBLATTICES.index(d.sublattice), registry.id(d.name)
        numbers[s, c], z[s, c], rms[s, c] = _slot_table(d.content, cfg.thermal_rms)

    prior_names = tuple(tables)
    probs = np.stack([tables[p] for p in prior_names])  # (P, S, C) float64
    cdf = np.cumsum(probs, axis=-1)
    last = (probs.shape[-1] - 1) - np.argmax(probs[..., ::-1] > 0, axis=-1)  # last nonzero
    cdf[np.arange(probs.shape[-1]) >= last[..., None]] = 1.0
    rot = np.deg2rad(np.asarray(cfg.sampling.rotation_deg, np.float64))
    return Layout(
        site_xy=xy.astype(np.float32),
        site_sublattice=sub.astype(np.int32),
        cell=cell.astype(np.float32),
        content_numbers=numbers,
        content_z=z,
        content_rms=rms,
        class_probs=probs.astype(np.float32),
        class_cdf=cdf.astype(np.float32),
        rotation_range_rad=rot.astype(np.float32),
        strain_max=np.asarray(cfg.sampling.strain_max, np.float32),
        extent=(lx, ly),
        margin=float(margin_angstrom),
        thermal=bool(cfg.sampling.thermal if thermal is None else thermal),
        prior_names=prior_names,
        registry=registry,
        species=tuple(sorted({int(v) for v in numbers.ravel() if v > 0})),
        name=cfg.name,
    )
