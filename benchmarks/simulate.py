"""Simulator throughput and accuracy, stemjax side by side with abTEM, in one run.

Case (issue 2): WSe2 monolayer (ase mx2, a = 3.297 Å, 4×3 orthogonal cells), 80 kV, 25 mrad,
ADF 60–200 mrad, 0.05 Å potential sampling, 1 Å slices, 0.2 Å scan sampling.

Prints probe positions per second for abTEM (multislice and PRISM at interpolation 1) and
stemjax, their ratio, and relative RMS differences: stemjax vs abTEM at the same settings, and
both vs a converged abTEM reference (0.0125 Å potential sampling, abTEM PRISM at interpolation 1,
which is exactly its multislice) that measures which one is
closer to the right image. Then the training-sized case (256×256 px at 0.2 Å/px).

    python benchmarks/simulate.py [--quick] [--repeat N]
"""

import argparse
import os
import platform
import time

import numpy as np


def relrms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


def timed(fn, repeat):
    fn()  # warm-up (compilation, FFT plans)
    times = []
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, float(np.median(times))


def wse2_cell(reps=(4, 3)):
    import abtem
    import ase.build

    atoms = ase.build.mx2("WSe2", a=3.297, thickness=3.34, vacuum=2)
    return abtem.orthogonalize_cell(atoms) * (reps[0], reps[1], 1)


def abtem_image(atoms, sampling, prism=False):
    import abtem

    abtem.config.set({"device": "cpu"})
    potential = abtem.Potential(
        atoms,
        sampling=sampling,
        slice_thickness=1.0,
        projection="infinite",
        parametrization="lobato",
    )
    detector = abtem.AnnularDetector(inner=60, outer=200)
    scan = abtem.GridScan(
        start=(0, 0), end=(1, 1), fractional=True, potential=potential, sampling=0.2
    )
    if prism:
        smatrix = abtem.SMatrix(
            potential=potential, energy=80e3, semiangle_cutoff=25, interpolation=1
        )
        return smatrix.scan(scan=scan, detectors=detector).compute(progress_bar=False).array
    probe = abtem.Probe(energy=80e3, semiangle_cutoff=25)
    return probe.scan(potential, scan=scan, detectors=detector).compute(progress_bar=False).array


def stemjax_image(atoms, potential_sampling=0.05, **kwargs):
    from stemjax import simulate_adf

    return simulate_adf(
        atoms,
        energy=80e3,
        semiangle_cutoff=25,
        detector=(60, 200),
        scan_sampling=0.2,
        potential_sampling=potential_sampling,
        slice_thickness=1.0,
        **kwargs,
    )


def training_case(repeat):
    """256×256 px at 0.2 Å/px of a WSe2 monolayer (about 51 Å field), stemjax only."""
    import ase.build
    from ase.build import make_supercell

    from stemjax import simulate_adf

    unit = ase.build.mx2("WSe2", a=3.297, thickness=3.34, vacuum=2)
    ortho = make_supercell(unit, [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    reps = (16, 9)
    atoms = ortho * (reps[0], reps[1], 1)
    # Make the cell exactly 256 × 0.2 Å along x by a tiny strain; y keeps its lattice period.
    cell = atoms.cell.array.copy()
    target = (51.2, cell[1, 1])
    atoms.set_cell([[target[0], 0, 0], [0, target[1], 0], cell[2]], scale_atoms=True)
    fn = lambda: simulate_adf(  # noqa: E731
        atoms,
        energy=80e3,
        semiangle_cutoff=25,
        detector=(60, 200),  # noqa: E731
        scan_sampling=0.2,
        potential_sampling=0.05,
    )
    image, t = timed(fn, repeat)
    return image.shape, image.size / t, t


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the converged reference")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--save", help="write all images to this .npz")
    args = parser.parse_args()

    import jax

    atoms = wse2_cell()
    rows = []
    ab_ms, t_ms = timed(lambda: abtem_image(atoms, 0.05), args.repeat)
    ab_prism, t_prism = timed(lambda: abtem_image(atoms, 0.05, prism=True), args.repeat)
    sj, t_sj = timed(lambda: stemjax_image(atoms), args.repeat)
    sj_ms, t_sj_ms = timed(lambda: stemjax_image(atoms, method="multislice"), args.repeat)
    sj_fine, t_sj_fine = timed(lambda: stemjax_image(atoms, potential_sampling=0.025), args.repeat)
    n = sj.size
    # Converged reference: abTEM PRISM at interpolation 1 is exactly its multislice, faster.
    reference = None if args.quick else abtem_image(atoms, 0.0125, prism=True)

    def row(name, image, t):
        entry = [name, f"{n / t:10.1f}", f"{t:8.3f}", f"{relrms(image, ab_ms):.4f}"]
        entry.append("-" if reference is None else f"{relrms(image, reference):.4f}")
        rows.append(entry)

    row("abTEM multislice", ab_ms, t_ms)
    row("abTEM PRISM (interpolation 1)", ab_prism, t_prism)
    row("stemjax auto (= prism: S-matrix/detector Gram)", sj, t_sj)
    row("stemjax multislice (Nyquist scan + Fourier)", sj_ms, t_sj_ms)
    row("stemjax auto at 0.025 Å potential sampling", sj_fine, t_sj_fine)

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    print(
        f"case: WSe2 4x3 orthogonal cells {atoms.cell.lengths()[:2].round(3)} Å, "
        f"{len(atoms)} atoms, scan {sj.shape} positions at 0.2 Å, 0.05 Å potential sampling"
    )
    header = ["code", "positions/s", "time (s)", "relRMS vs abTEM 0.05", "relRMS vs abTEM 0.0125"]
    widths = [46, 12, 9, 21, 22]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    print(
        f"\nspeed-up of stemjax over abTEM multislice: {t_ms / t_sj:.1f}x, "
        f"over abTEM PRISM: {t_prism / t_sj:.1f}x (both at 0.05 Å); stemjax at 0.025 Å: "
        f"{t_ms / t_sj_fine:.1f}x and {t_prism / t_sj_fine:.1f}x"
    )
    if reference is not None:
        print(
            f"discretisation error at 0.05 Å vs converged (0.0125 Å) abTEM: abTEM "
            f"{relrms(ab_ms, reference):.4f}, stemjax {relrms(sj, reference):.4f}"
        )

    if args.save:
        np.savez(
            args.save,
            abtem_multislice=ab_ms,
            abtem_prism=ab_prism,
            stemjax=sj,
            stemjax_multislice=sj_ms,
            stemjax_fine=sj_fine,
            **({} if reference is None else {"abtem_reference": reference}),
        )
    if not args.skip_training:
        shape, rate, t = training_case(args.repeat)
        print(
            f"\ntraining-sized case: {shape} px at 0.2 Å/px, stemjax {rate:.0f} positions/s "
            f"({t:.2f} s per image)"
        )


if __name__ == "__main__":
    main()
