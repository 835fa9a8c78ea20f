"""User-level ADF-STEM simulation of an `ase.Atoms` periodic cell.

`simulate_adf` validates its inputs, plans the grids once, and runs the jitted array-level
simulator (`stemjax.physics.adf_image`), averaging over frozen-phonon configurations.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.physics.adf import Microscope, adf_image, plan_geometry
from stemjax.physics.probe import Aberrations

#: Default 1σ thermal displacement per Cartesian axis (Å) for frozen phonons.
DEFAULT_PHONON_SIGMA = 0.08


def _check_cell(atoms):
    cell = np.asarray(atoms.cell.array, dtype=np.float64)
    if not np.all(atoms.pbc[:2]):
        raise ValueError(
            f"atoms: expected a cell periodic along x and y (pbc[:2] all True), got pbc={atoms.pbc}"
        )
    off_diagonal = cell[:2, :2] - np.diag(np.diag(cell[:2, :2]))
    if np.any(np.abs(off_diagonal) > 1e-8) or np.any(np.abs(cell[:2, 2]) > 1e-8):
        raise ValueError(
            "atoms: expected an orthogonal cell with a along x and b along y (e.g. "
            "ase.build.mx2(...) then atoms = orthogonal supercell via ase.build.make_supercell "
            f"or abtem.orthogonalize_cell), got cell vectors {cell[:2].tolist()}"
        )
    extent = (float(cell[0, 0]), float(cell[1, 1]))
    if min(extent) <= 0:
        raise ValueError(f"atoms: cell lengths must be positive, got {extent} Å")
    return extent, float(cell[2, 2])


@functools.partial(jax.jit, static_argnames=("geometry",))
def _adf_jit(positions, numbers, mask, microscope, geometry):
    return adf_image(positions, numbers, mask, microscope, geometry)


def simulate_adf(
    atoms,
    *,
    energy: float,
    semiangle_cutoff: float,
    detector: tuple[float, float],
    scan_sampling: float,
    potential_sampling: float = 0.05,
    slice_thickness: float = 1.0,
    aberrations: dict | Aberrations | None = None,
    focal_spread: float = 0.0,
    source_size: float = 0.0,
    frozen_phonons: int = 0,
    seed: int = 0,
    phonon_sigma: float | dict = DEFAULT_PHONON_SIGMA,
    interpolate: bool = True,
    window_extent: float | None = None,
    parametrization: str = "lobato",
    oversampling: int | None = None,
    method: str = "auto",
    dtype=np.float32,
):
    """ADF-STEM image of an orthogonal periodic `ase.Atoms` cell, in fraction of incident intensity.

    energy: beam energy (eV). semiangle_cutoff: probe semiangle (mrad). detector: (inner, outer)
    angles (mrad). scan_sampling: probe step bound (Å); the scan has n = ceil(L / scan_sampling)
    positions per axis spaced L / n from the cell origin. potential_sampling: potential pixel (Å).
    slice_thickness: slice thickness (Å). aberrations: Krivanek coefficients (Å, rad) as a dict
    (e.g. {"C10": -20, "C12": 10, "phi12": 0.3}, or 'defocus'/'Cs' aliases) or `Aberrations`.
    focal_spread: 1σ defocus spread (Å). source_size: 1σ Gaussian source (Å).
    frozen_phonons: number of thermal configurations averaged (0: static lattice), with Gaussian
    displacements of `phonon_sigma` Å per axis (a float or a {symbol: σ} dict), seeded by `seed`.
    interpolate: scan at the Nyquist step λ/4α and Fourier-interpolate (exact, faster).
    method: 'auto', 'multislice' (reference path) or 'prism' (exact S-matrix/detector Gram
    matrix, fastest for small periodic cells); see `stemjax.physics.plan_geometry`.

    Returns a NumPy array of shape (n_x, n_y), axis 0 along the first cell vector.
    """
    extent, thickness = _check_cell(atoms)
    if np.ndim(detector) != 1 or len(detector) != 2:
        raise ValueError(f"detector: expected (inner, outer) in mrad, got {detector}")
    if not isinstance(aberrations, Aberrations):
        aberrations = Aberrations.from_dict(aberrations)
    for name, value in (("focal_spread", focal_spread), ("source_size", source_size)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: expected a non-negative length in Å, got {value}")
    if int(frozen_phonons) < 0:
        raise ValueError(f"frozen_phonons: expected a non-negative count, got {frozen_phonons}")
    microscope = Microscope(
        energy=float(energy),
        semiangle_cutoff=float(semiangle_cutoff),
        detector_inner=float(detector[0]),
        detector_outer=float(detector[1]),
        aberrations=aberrations,
        focal_spread=float(focal_spread),
        source_size=float(source_size),
    )
    positions = np.asarray(atoms.positions, dtype=np.float64)
    numbers = np.asarray(atoms.numbers, dtype=np.int32)
    if len(numbers) == 0:
        raise ValueError("atoms: the cell holds no atoms")
    geometry = plan_geometry(
        extent,
        positions[:, 2],
        numbers,
        microscope,
        potential_sampling=potential_sampling,
        slice_thickness=slice_thickness,
        scan_sampling=scan_sampling,
        interpolate=interpolate,
        window_extent=window_extent,
        cell_thickness=thickness,
        parametrization=parametrization,
        oversampling=oversampling,
        method=method,
    )
    mask = np.ones(len(numbers), bool)
    microscope = microscope.astype(dtype)
    if not frozen_phonons:
        image = _adf_jit(jnp.asarray(positions, dtype), numbers, mask, microscope, geometry)
        return np.asarray(image)

    if isinstance(phonon_sigma, dict):
        sigmas = np.array([phonon_sigma[s] for s in atoms.get_chemical_symbols()], np.float64)
    else:
        sigmas = np.full(len(numbers), float(phonon_sigma))
    rng = np.random.default_rng(seed)
    total = 0.0
    for _ in range(int(frozen_phonons)):
        displaced = positions + rng.normal(size=positions.shape) * sigmas[:, None]
        displaced[:, 2] = positions[:, 2]  # keep each atom in its slice
        total = total + _adf_jit(jnp.asarray(displaced, dtype), numbers, mask, microscope, geometry)
    return np.asarray(total / int(frozen_phonons))


def wse2_demo_cell(reps=(6, 4), a=3.297):
    """Orthogonal WSe2 monolayer cell (ase mx2, a in Å) with a few labelled point defects.

    Returns (atoms, defects) where defects is a list of (name, x, y) in Å: a single Se vacancy,
    a double Se vacancy, a 2Te column, an SeTe column and a W vacancy.
    """
    import ase.build
    from ase.build import make_supercell

    unit = ase.build.mx2("WSe2", a=a, thickness=3.34, vacuum=2)
    ortho = make_supercell(unit, [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    atoms = ortho * (reps[0], reps[1], 1)
    atoms.wrap()
    xy = atoms.positions[:, :2]
    symbols = np.array(atoms.get_chemical_symbols())

    def column_near(target, element):
        d = np.linalg.norm(xy - target, axis=1) + np.where(symbols == element, 0, 1e9)
        i = int(np.argmin(d))
        return np.flatnonzero((np.linalg.norm(xy - xy[i], axis=1) < 0.1) & (symbols == element))

    extent = np.diag(atoms.cell.array)[:2]
    plan = [
        ("SV", (0.25, 0.25), "Se", "remove1"),
        ("DV", (0.75, 0.25), "Se", "remove2"),
        ("2Te", (0.25, 0.75), "Se", "te2"),
        ("SeTe", (0.75, 0.75), "Se", "te1"),
        ("VW", (0.5, 0.5), "W", "remove1"),
    ]
    remove, defects = [], []
    for name, frac, element, action in plan:
        idx = column_near(np.array(frac) * extent, element)
        if action == "remove1":
            remove.append(idx[0])
        elif action == "remove2":
            remove.extend(idx[:2])
        elif action == "te2":
            symbols[idx[:2]] = "Te"
        elif action == "te1":
            symbols[idx[0]] = "Te"
        defects.append((name, float(xy[idx[0], 0]), float(xy[idx[0], 1])))
    atoms.set_chemical_symbols(list(symbols))
    del atoms[sorted(set(int(i) for i in remove))]
    return atoms, defects


def main(argv=None):
    """Simulate a WSe2 monolayer with a few defects and write a PNG (the README's first command)."""
    import argparse
    import time
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parser = argparse.ArgumentParser(
        prog="python -m stemjax.simulate",
        description="ADF-STEM simulation of a WSe2 monolayer with a few point defects.",
    )
    parser.add_argument("--out", default="wse2_adf.png", help="PNG to write (default: %(default)s)")
    parser.add_argument(
        "--cells",
        type=int,
        nargs=2,
        default=(6, 4),
        help="orthogonal cells along x and y (default: 6 4)",
    )
    parser.add_argument("--energy", type=float, default=80e3, help="beam energy in eV")
    parser.add_argument("--semiangle", type=float, default=25.0, help="probe semiangle in mrad")
    parser.add_argument(
        "--detector",
        type=float,
        nargs=2,
        default=(60.0, 200.0),
        help="ADF inner and outer angles in mrad",
    )
    parser.add_argument("--scan-sampling", type=float, default=0.2, help="probe step in Å")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    args = parser.parse_args(argv)

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        parser.error(f"--out: expected a .png file name, got {out}")
    if out.exists() and not args.overwrite:
        parser.error(f"--out: {out} exists; pass --overwrite to replace it")
    atoms, defects = wse2_demo_cell(tuple(args.cells))
    t0 = time.perf_counter()
    image = simulate_adf(
        atoms,
        energy=args.energy,
        semiangle_cutoff=args.semiangle,
        detector=tuple(args.detector),
        scan_sampling=args.scan_sampling,
        source_size=0.4,
    )
    elapsed = time.perf_counter() - t0
    extent = np.diag(atoms.cell.array)[:2]
    fig, ax = plt.subplots(figsize=(7, 7 * extent[1] / extent[0] + 0.6))
    ax.imshow(image.T, origin="lower", cmap="gray", extent=(0, extent[0], 0, extent[1]))
    for name, x, y in defects:
        ax.annotate(
            name,
            (x, y),
            xytext=(x + 0.8, y + 0.8),
            color="orange",
            fontsize=9,
            arrowprops={"arrowstyle": "-", "color": "orange"},
        )
    ax.set_xlabel("x (Å)")
    ax.set_ylabel("y (Å)")
    ax.set_title(
        f"WSe2, {args.energy / 1e3:g} kV, {args.semiangle:g} mrad, "
        f"ADF {args.detector[0]:g}-{args.detector[1]:g} mrad"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(
        f"simulated {image.shape[0]}x{image.shape[1]} probe positions of {len(atoms)} atoms "
        f"in {elapsed:.1f} s; ADF signal {image.min():.4f}-{image.max():.4f} of the beam"
    )
    print(f"wrote {out.resolve()}")


if __name__ == "__main__":
    main()
