"""Material definitions as typed configs: the schema, the YAML loader and the ASE unit cell.

A material is data, not code: `conf/specimen/<name>.yaml` fills `SpecimenConfig`. This is the
only module of `stemjax.specimen` that touches OmegaConf; everything downstream receives plain
dataclass instances.

The schema dataclasses are not `frozen`: OmegaConf cannot merge YAML dict entries into a
structured config made from a frozen dataclass (it marks the node read-only). Treat instances as
immutable; the jitted code never sees them, only the arrays of a `Layout`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import ase
import ase.build
import numpy as np
from omegaconf import MISSING, DictConfig, OmegaConf

SUBLATTICES = ("metal", "chalcogen")
"""Sublattice names of a 2H MX2 monolayer; the index into this tuple is the sublattice id."""

SLOTS_PER_SITE = 2
"""Atom slots per lattice site: a chalcogen column holds two atoms (z = ±h); a metal site one
atom plus a spare slot so that e.g. two Te atoms can sit on a W site."""


@dataclass
class AtomSlot:
    """One atom of a site's content: element symbol and height z (Å) relative to the metal plane."""

    element: str = MISSING
    z: float = 0.0


@dataclass
class DefectClassConfig:
    """A defect class: its name, the sublattice it replaces a site of, and the site's new content
    (0..2 atoms; an empty list is a vacancy)."""

    name: str = MISSING
    sublattice: str = MISSING
    content: list[AtomSlot] = field(default_factory=list)


@dataclass
class PriorConfig:
    """Per-class concentrations: probability that a site of the class's sublattice carries that
    defect. Pristine probability of a sublattice = 1 - sum over its classes."""

    concentrations: dict[str, float] = field(default_factory=dict)
    description: str = ""


@dataclass
class SamplingConfig:
    """Per-sample random transforms of the specimen."""

    rotation_deg: list[float] = field(default_factory=lambda: [0.0, 360.0])
    """Uniform range [min, max] of the in-plane rotation, degrees."""
    strain_max: float = 0.01
    """Each of eps_xx, eps_yy, eps_xy uniform in [-strain_max, strain_max] (dimensionless)."""
    thermal: bool = True
    """Add per-atom Gaussian thermal displacements (off when the simulator does frozen phonons)."""


@dataclass
class SpecimenConfig:
    """Schema of a 2H MX2 monolayer with random point defects (`conf/specimen/*.yaml`)."""

    name: str = MISSING
    structure: str = "2H"
    """Polytype passed to `ase.build.mx2`; only 2H (chalcogens in one projected column)."""
    a: float = MISSING
    """In-plane lattice constant, Å."""
    metal: list[AtomSlot] = field(default_factory=list)
    """Pristine content of a metal site."""
    chalcogen: list[AtomSlot] = field(default_factory=list)
    """Pristine content of a chalcogen column (two atoms at z = ±h)."""
    defects: list[DefectClassConfig] = field(default_factory=list)
    """Defect classes; their order fixes the class ids 1..K (0 is 'none')."""
    thermal_rms: dict[str, float] = field(default_factory=dict)
    """Per-element rms thermal displacement along each Cartesian axis, Å."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    priors: dict[str, PriorConfig] = field(default_factory=dict)
    """Named priors (at least `train` and `eval`)."""


def conf_dir() -> Path:
    """The Hydra config root: `stemjax/conf` when installed with it, else the repo's `conf/`."""
    here = Path(__file__).resolve().parent
    for cand in (here.parent / "conf", here.parents[1] / "conf"):
        if (cand / "specimen").is_dir():
            return cand
    raise FileNotFoundError(f"no conf/specimen directory found near {here}")


def available_materials() -> list[str]:
    """Names of the specimen configs shipped in `conf/specimen/`."""
    return sorted(p.stem for p in (conf_dir() / "specimen").glob("*.yaml"))


def to_specimen_config(cfg: SpecimenConfig | DictConfig | dict) -> SpecimenConfig:
    """Convert a (Hydra) DictConfig or plain dict into a validated-by-type `SpecimenConfig`."""
    if isinstance(cfg, SpecimenConfig):
        return cfg
    merged = OmegaConf.merge(OmegaConf.structured(SpecimenConfig), cfg)
    return OmegaConf.to_object(merged)


def load_specimen_config(name_or_path: str | Path) -> SpecimenConfig:
    """Load `conf/specimen/<name>.yaml` (or a YAML path) into a checked `SpecimenConfig`.

    Type errors and unknown keys raise OmegaConf errors naming the key; semantic errors (unknown
    class names, bad sublattices, concentrations > 1, ...) raise ValueError naming the file.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = conf_dir() / "specimen" / f"{name_or_path}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; available: {available_materials()}")
    cfg = to_specimen_config(OmegaConf.load(path))
    from stemjax.specimen.registry import DefectRegistry, prior_tables

    prior_tables(cfg, DefectRegistry.from_config(cfg, source=str(path)), source=str(path))
    return cfg


def unit_cell(cfg: SpecimenConfig) -> ase.Atoms:
    """The pristine primitive cell (ASE `mx2`, 2D-periodic) with the config's elements and z (Å).

    Atom 0 is the metal site, the rest the chalcogen column; all chalcogens share one xy.
    """
    if cfg.structure != "2H":
        raise ValueError(
            f"specimen {cfg.name!r}: structure {cfg.structure!r} unsupported; "
            "only '2H' keeps both chalcogens in one projected column"
        )
    if len(cfg.metal) != 1:
        raise ValueError(f"specimen {cfg.name!r}: metal must hold exactly one atom")
    # `mx2` only provides the hexagonal cell and the 2H basis; z comes from the config.
    cell = ase.build.mx2(formula="MoS2", kind="2H", a=cfg.a, thickness=0.0)
    metal_xy, chalc_xy = cell.positions[0, :2], cell.positions[1, :2]
    slots = [(cfg.metal[0], metal_xy)] + [(s, chalc_xy) for s in cfg.chalcogen]
    return ase.Atoms(
        symbols=[s.element for s, _ in slots],
        positions=[(xy[0], xy[1], s.z) for s, xy in slots],
        cell=cell.cell,
        pbc=(True, True, False),
    )


def lattice_vectors(cfg: SpecimenConfig) -> np.ndarray:
    """In-plane primitive vectors (2, 2), Å, rows a1 and a2 (ASE convention, 120° apart)."""
    return np.asarray(unit_cell(cfg).cell[:2, :2], dtype=np.float64)
