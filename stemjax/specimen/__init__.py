"""Specimens: 2D-material lattices with random point defects, and the defect-class registry.

Host, once per (material, field size): `load_specimen_config` -> `build_layout` (NumPy tables).
Device, per sample: `sample_specimen(key, layout, prior)` -> `Specimen` (fixed-size, masked).
"""

from stemjax.specimen.layout import Layout, build_layout, coverage_radius
from stemjax.specimen.materials import (
    SLOTS_PER_SITE,
    SUBLATTICES,
    AtomSlot,
    DefectClassConfig,
    PriorConfig,
    SamplingConfig,
    SpecimenConfig,
    available_materials,
    conf_dir,
    lattice_vectors,
    load_specimen_config,
    to_specimen_config,
    unit_cell,
)
from stemjax.specimen.registry import (
    NONE,
    DefectClass,
    DefectRegistry,
    concentration_table,
    prior_tables,
)
from stemjax.specimen.sampler import Specimen, atom_site, sample_specimen, species_index

__all__ = [
    "NONE",
    "SLOTS_PER_SITE",
    "SUBLATTICES",
    "AtomSlot",
    "DefectClass",
    "DefectClassConfig",
    "DefectRegistry",
    "Layout",
    "PriorConfig",
    "SamplingConfig",
    "Specimen",
    "SpecimenConfig",
    "atom_site",
    "available_materials",
    "build_layout",
    "conf_dir",
    "coverage_radius",
    "lattice_vectors",
    "load_specimen_config",
    "concentration_table",
    "prior_tables",
    "sample_specimen",
    "species_index",
    "to_specimen_config",
    "unit_cell",
]
