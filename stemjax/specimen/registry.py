"""The defect-class registry: the one source of truth for class ids, names and sublattices.

Built from a `SpecimenConfig`: id 0 is "none" (no defect: pristine site or background), the
defect classes get ids 1..K in config order. Targets, metrics and prediction read class ids and
names from here only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase.data import atomic_numbers

from stemjax.specimen.materials import SLOTS_PER_SITE, SUBLATTICES, SpecimenConfig

NONE = "none"
"""Name of class id 0: no defect (pristine site, or background in a class map)."""


@dataclass(frozen=True)
class DefectClass:
    """One class: id, name and sublattice name (None for the 'none' class)."""

    id: int
    name: str
    sublattice: str | None


@dataclass(frozen=True)
class DefectRegistry:
    """Ordered, hashable table of defect classes (usable as static jit metadata)."""

    classes: tuple[DefectClass, ...]
    sublattices: tuple[str, ...] = SUBLATTICES

    @classmethod
    def from_config(cls, cfg: SpecimenConfig, source: str = "specimen config") -> DefectRegistry:
        """Build and check the registry; `source` (e.g. the YAML path) is named in errors."""
        check_config(cfg, source)
        classes = [DefectClass(0, NONE, None)]
        classes += [DefectClass(i + 1, d.name, d.sublattice) for i, d in enumerate(cfg.defects)]
        return cls(tuple(classes))

    @property
    def names(self) -> tuple[str, ...]:
        """Class names ordered by id (index 0 is 'none')."""
        return tuple(c.name for c in self.classes)

    @property
    def defect_names(self) -> tuple[str, ...]:
        """Defect class names, ids 1..K."""
        return self.names[1:]

    @property
    def num_classes(self) -> int:
        """Number of classes including 'none' (K + 1): the channel count of a class map."""
        return len(self.classes)

    def __len__(self) -> int:
        return self.num_classes

    def __getitem__(self, key: int | str) -> DefectClass:
        """Look a class up by id or by name."""
        if isinstance(key, str):
            return self.classes[self.id(key)]
        if not 0 <= int(key) < self.num_classes:
            raise ValueError(f"class id {key} out of range 0..{self.num_classes - 1}")
        return self.classes[int(key)]

    def id(self, name: str) -> int:
        """Class id of `name`; ValueError listing the known names if unknown."""
        try:
            return self.names.index(name)
        except ValueError:
            raise ValueError(f"unknown defect class {name!r}; known: {list(self.names)}") from None

    def name(self, class_id: int) -> str:
        """Class name of id `class_id`."""
        return self[class_id].name

    def sublattice(self, key: int | str) -> str | None:
        """Sublattice name of a class (None for 'none')."""
        return self[key].sublattice

    def sublattice_index(self, key: int | str) -> int:
        """Index into `sublattices` of a class's sublattice, -1 for 'none'."""
        sub = self[key].sublattice
        return -1 if sub is None else self.sublattices.index(sub)

    def ids_on(self, sublattice: str) -> tuple[int, ...]:
        """Ids of the defect classes on `sublattice`."""
        if sublattice not in self.sublattices:
            raise ValueError(f"unknown sublattice {sublattice!r}; known: {list(self.sublattices)}")
        return tuple(c.id for c in self.classes if c.sublattice == sublattice)

    def sublattice_ids(self) -> np.ndarray:
        """(num_classes,) int32 sublattice index per class id, -1 for 'none'."""
        return np.array([self.sublattice_index(i) for i in range(self.num_classes)], np.int32)

    def sublattice_names(self) -> np.ndarray:
        """(num_classes,) object array: sublattice name per class id, None for 'none' (index it
        with an array of class ids)."""
        return np.array([c.sublattice for c in self.classes], dtype=object)


def _check_slots(slots, where: str, source: str) -> None:
    if len(slots) > SLOTS_PER_SITE:
        raise ValueError(
            f"{source}: {where} has {len(slots)} atoms; a site holds at most {SLOTS_PER_SITE}"
        )
    for s in slots:
        if s.element not in atomic_numbers or s.element == "X":
            raise ValueError(f"{source}: {where} has unknown element {s.element!r}")


def check_config(cfg: SpecimenConfig, source: str = "specimen config") -> None:
    """Semantic checks the type schema cannot express; ValueError naming `source` and field."""
    _check_slots(cfg.metal, "metal", source)
    _check_slots(cfg.chalcogen, "chalcogen", source)
    if not cfg.metal or not cfg.chalcogen:
        raise ValueError(f"{source}: pristine metal and chalcogen content must not be empty")
    if cfg.a <= 0:
        raise ValueError(f"{source}: lattice constant a = {cfg.a} Å must be positive")
    seen = {NONE}
    for i, d in enumerate(cfg.defects):
        where = f"defects[{i}] ({d.name!r})"
        if d.name in seen:
            raise ValueError(f"{source}: {where}: duplicate or reserved class name {d.name!r}")
        seen.add(d.name)
        if d.sublattice not in SUBLATTICES:
            raise ValueError(
                f"{source}: {where}: sublattice {d.sublattice!r} not in {list(SUBLATTICES)}"
            )
        _check_slots(d.content, f"{where}.content", source)
    elements = {s.element for s in cfg.metal + cfg.chalcogen}
    elements |= {s.element for d in cfg.defects for s in d.content}
    missing = sorted(elements - set(cfg.thermal_rms))
    if missing:
        raise ValueError(f"{source}: thermal_rms lacks elements {missing}")
    for el, rms in cfg.thermal_rms.items():
        if not rms >= 0:
            raise ValueError(f"{source}: thermal_rms.{el} = {rms} Å must be >= 0")
    lo, hi = cfg.sampling.rotation_deg if len(cfg.sampling.rotation_deg) == 2 else (1, 0)
    if not lo <= hi:
        raise ValueError(
            f"{source}: sampling.rotation_deg must be [min, max] with min <= max, "
            f"got {list(cfg.sampling.rotation_deg)}"
        )
    if not 0 <= cfg.sampling.strain_max < 0.25:
        raise ValueError(
            f"{source}: sampling.strain_max = {cfg.sampling.strain_max} must be in [0, 0.25)"
        )


def prior_tables(
    cfg: SpecimenConfig, registry: DefectRegistry, source: str = "specimen config"
) -> dict[str, np.ndarray]:
    """Resolve each named prior to a (num_sublattices, num_classes) float64 probability table
    (`concentration_table`). Raises ValueError naming `source` if no prior is defined."""
    if not cfg.priors:
        raise ValueError(f"{source}: no priors defined")
    return {
        pname: concentration_table(
            prior.concentrations, registry, source, field=f"priors.{pname}.concentrations"
        )
        for pname, prior in cfg.priors.items()
    }


def concentration_table(
    concentrations, registry: DefectRegistry, source: str, field: str = "concentrations"
) -> np.ndarray:
    """(num_sublattices, num_classes) float64 table of per-site concentrations {class name: p}.

    Row s gives the categorical distribution of a site on sublattice s over class ids: the
    concentration for the classes on s, 1 - their sum for 'none', 0 elsewhere. Raises
    ValueError naming `source`, the field and the known class names for unknown classes,
    and for concentrations outside [0, 1] or sums above 1.
    """
    table = np.zeros((len(registry.sublattices), registry.num_classes))
    for cname, conc in concentrations.items():
        field_name = f"{field}.{cname}"
        if cname not in registry.defect_names:
            raise ValueError(
                f"{source}: {field_name}: unknown defect class {cname!r}; "
                f"known: {list(registry.defect_names)}"
            )
        if not 0 <= conc <= 1:
            raise ValueError(f"{source}: {field_name} = {conc} must be in [0, 1]")
        table[registry.sublattice_index(cname), registry.id(cname)] = conc
    total = table.sum(axis=1)
    for s, sub in enumerate(registry.sublattices):
        if total[s] > 1 + 1e-9:
            raise ValueError(
                f"{source}: {field}: concentrations on the {sub} sublattice sum to "
                f"{total[s]:.4g} > 1"
            )
    table[:, 0] = np.clip(1 - total, 0, 1)
    return table
