"""Helpers shared by the physics tests (a module name unique across tests/, unlike conftest)."""

import ase
import ase.build
import numpy as np
from ase.build import make_supercell

#: WSe2 lattice constant (Å) and chalcogen–chalcogen distance used throughout (as the benchmark).
A_WSE2 = 3.297
THICKNESS_WSE2 = 3.34


def wse2_orthogonal(reps=(1, 1)) -> ase.Atoms:
    """Orthogonal WSe2 monolayer cell (a × a√3, 6 atoms per cell) repeated `reps` times.

    Same atoms and cell as `abtem.orthogonalize_cell(ase.build.mx2('WSe2', a=3.297,
    thickness=3.34, vacuum=2))` (up to wrapping), built with ASE only so that the fast tests do not
    import abTEM.
    """
    unit = ase.build.mx2("WSe2", a=A_WSE2, thickness=THICKNESS_WSE2, vacuum=2)
    atoms = make_supercell(unit, [[1, 0, 0], [1, 2, 0], [0, 0, 1]]) * (reps[0], reps[1], 1)
    atoms.wrap()
    return atoms


def extent_of(atoms) -> tuple[float, float]:
    return float(atoms.cell[0, 0]), float(atoms.cell[1, 1])


def rel_rms(a, b) -> float:
    """Relative RMS difference of `a` from the reference `b`."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2)))
