"""Calibration of full-multislice micrographs: does the fit's column-response model bias it?

`calibrate_draws.py` scores the fit on images drawn from its own forward model (a sum of
isolated-column multislice responses). Here the micrograph comes from stemjax's exact PRISM
path (`stemjax.physics`) on a periodic orthogonal WSe2 supercell: inter-column interference and
channelling across neighbours included, every image averaged over frozen-phonon configurations
of the material's thermal rms, with 10 % of the columns defective (SeTe, SV, VW, contents from
the specimen config). The pixel is fixed by the cell (`n` scan positions over its edge, slightly
anisotropic: a true scan stretch η) and the lattice is unrotated (θ = 0 mod 120°); each draw
takes a random probe (Δf, C12/φ12, C21/φ21, source size), dose, detector and background as in
`calibrate_draws.py`. The ADF signal is a quadratic form in the PRISM Gram matrix, which does
not depend on the aberrations: the configurations' Gram matrices are averaged once and every
draw's frozen-phonon image is that one quadratic form.

`calibrate` then starts from a nominal pixel size ±3 % off with no rotation given, computes
its own column responses (default `CALIBRATION_PHONONS`, 32) and fits. Prints the acceptance
table of `calibrate_draws.py`.

    python benchmarks/calibrate_multislice.py --draws 4 --phonons 32 [--json out.json]
    python benchmarks/calibrate_multislice.py --phonons 0 --fit-phonons 0   (static lattice)
    python benchmarks/calibrate_multislice.py --draws 5 --first 2   (only draws 2-4 of that run)
"""

import argparse
import json
import platform
import time
import warnings

import ase.build
import jax
import jax.numpy as jnp
import numpy as np
from calibrate_draws import draw_truth, print_records, record

from stemjax.calibrate import calibrate
from stemjax.calibrate.model import (
    CALIBRATION_PHONONS,
    METAL_PLANE_DEPTH_A,
    fitted_microscope,
    legendre_basis,
)
from stemjax.calibrate.synthetic import detector_image
from stemjax.microscope_prior import load_microscope_prior, mean_microscope
from stemjax.physics.adf import (
    finish_image,
    plan_geometry,
    prism_gram,
    prism_probe_coefficients,
    scan_positions,
    transmission_functions,
)
from stemjax.physics.prism import prism_signal
from stemjax.specimen import load_specimen_config
from stemjax.specimen.materials import unit_cell


def supercell_columns(spec, repeats):
    """Metal sites and chalcogen-column xy (Å) of an orthogonal a × √3a supercell repeated
    `repeats` times, a1 along x, a metal site at the origin; and the cell extent (Å)."""
    ortho = ase.build.make_supercell(unit_cell(spec), [[1, 0, 0], [1, 2, 0], [0, 0, 1]])
    cell = ortho.repeat((*repeats, 1))
    extent = (float(cell.cell[0, 0]), float(cell.cell[1, 1]))
    metal_symbol = spec.metal[0].element
    xy = np.round(cell.positions[:, :2], 6) % np.array(extent)
    is_metal = np.array(cell.get_chemical_symbols()) == metal_symbol
    chalc = np.unique(xy[~is_metal], axis=0)  # two chalcogens per column
    metal = xy[is_metal]
    return metal, chalc, extent


def defective_atoms(spec, metal, chalc, classes, fraction, rng):
    """(xy (N, 2) Å, z (N,) Å from the metal plane, elements (N,), number of defective columns)
    of the supercell with a `fraction` of the columns replaced by a random one of `classes` of
    their sublattice."""
    contents = {"metal": list(spec.metal), "chalcogen": list(spec.chalcogen)}
    options = {"metal": [], "chalcogen": []}
    for d in spec.defects:
        if d.name in classes:
            options[d.sublattice].append(list(d.content))
    xy, z, el, n_defective = [], [], [], 0
    for sub, sites in (("metal", metal), ("chalcogen", chalc)):
        for site in sites:
            content = contents[sub]
            if options[sub] and rng.random() < fraction:
                content = options[sub][int(rng.integers(len(options[sub])))]
                n_defective += 1
            for slot in content:
                xy.append(site)
                z.append(slot.z)
                el.append(slot.element)
    return np.array(xy), np.array(z), np.array(el), n_defective


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument(
        "--phonons", type=int, default=32, help="configurations of the reference (0: static)"
    )
    ap.add_argument(
        "--fit-phonons",
        type=int,
        default=CALIBRATION_PHONONS,
        help="configurations of the fit's column responses",
    )
    ap.add_argument("--repeats", type=int, nargs=2, default=(6, 4), help="orthogonal cells")
    ap.add_argument("--pixel", type=float, default=0.2074, help="target scan pixel (Å)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--first",
        type=int,
        default=0,
        help="skip the fits of the draws before this one (their images are still drawn, so "
        "later draws are the same micrographs as in a full run)",
    )
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    spec = load_specimen_config("wse2te")
    base = mean_microscope(load_microscope_prior("wse2te"))
    rng = np.random.default_rng(args.seed)

    metal, chalc, extent = supercell_columns(spec, args.repeats)
    xy, z, elements, n_defective = defective_atoms(
        spec, metal, chalc, ("SeTe", "SV", "VW"), 0.1, rng
    )
    numbers = np.array([ase.data.atomic_numbers[e] for e in elements])
    rms = np.array([spec.thermal_rms[e] for e in elements])
    shape = tuple(int(round(L / args.pixel)) for L in extent)
    # plan_geometry takes n = ceil(L / s) positions per axis: one s valid for both axes.
    scan_sampling_A = max(L / n for L, n in zip(extent, shape, strict=True))
    geometry = plan_geometry(
        extent,
        z + METAL_PLANE_DEPTH_A,
        numbers,
        base,
        scan_sampling=scan_sampling_A,
        cell_thickness=2 * METAL_PLANE_DEPTH_A,
        method="prism",
    )
    assert geometry.output_gpts == shape, (geometry.output_gpts, shape)
    axis_pixel_A = [L / n for L, n in zip(extent, shape, strict=True)]
    # model.lattice_matrix: 1/p is the mean of the axes' 1/p_i, η their relative difference
    pixel_A = 2.0 / (1.0 / axis_pixel_A[0] + 1.0 / axis_pixel_A[1])
    stretch = (axis_pixel_A[1] - axis_pixel_A[0]) / (axis_pixel_A[0] + axis_pixel_A[1])
    print(
        f"# {platform.processor() or platform.machine()}, jax {jax.__version__} "
        f"{jax.default_backend()}; {extent[0]:.2f} × {extent[1]:.2f} Å cell, {len(xy)} atoms, "
        f"defective columns {n_defective}/{len(metal) + len(chalc)}; image {shape} px at "
        f"{axis_pixel_A[0]:.5f} × {axis_pixel_A[1]:.5f} Å (p {pixel_A:.5f}, η {stretch:+.5f}); "
        f"{geometry.gpts} potential grid × {geometry.oversampling}, {args.phonons} phonon configs"
    )

    numbers_j = jnp.asarray(numbers)
    mask = jnp.ones(len(numbers), bool)
    gram_of = jax.jit(
        lambda pos: prism_gram(
            transmission_functions(pos, numbers_j, mask, base.energy, geometry), base, geometry
        )
    )
    t0 = time.perf_counter()
    n_configs = max(args.phonons, 1)
    gram = 0.0
    for _ in range(n_configs):
        jitter = rng.normal(size=xy.shape) * rms[:, None] if args.phonons else 0.0
        pos = np.concatenate([xy + jitter, z[:, None] + METAL_PLANE_DEPTH_A], 1)
        gram = gram + gram_of(jnp.asarray(pos, jnp.float32)) / n_configs
    gram = jax.block_until_ready(gram)
    t_gram = time.perf_counter() - t0
    scan = scan_positions(geometry, jnp.float32)

    @jax.jit
    def clean_image(values, gram):
        """Frozen-phonon ADF image (fraction of the beam) under `values`' probe: the signal is
        c^H M c*, linear in M, so the averaged Gram matrix gives the configurations' mean."""
        mic = fitted_microscope(values, base).astype(jnp.float32)
        coef, beam_k = prism_probe_coefficients(mic, geometry, jnp.complex64)
        image = prism_signal(gram, coef, beam_k, scan, geometry.chunk)
        return finish_image(image.reshape(geometry.scan_gpts), mic.source_size, geometry)

    print(
        f"# reference: {t_gram:.0f} s for {n_configs} PRISM Gram matrices; the fit's column "
        f"responses average {args.fit_phonons} configurations"
    )
    records = []
    basis = legendre_basis(shape, 2)
    for d in range(args.draws):
        truth = draw_truth(rng, min(shape))
        truth.update(
            origin_x_px=0.0,
            origin_y_px=0.0,
            rotation_rad=0.0,
            pixel_size_angstrom=pixel_A,
            stretch=stretch,
            shear=0.0,
        )
        signal = np.asarray(clean_image({k: jnp.float32(v) for k, v in truth.items()}, gram))
        signal = signal + np.tensordot(rng.normal(0, 0.001, len(basis)), basis, axes=1)
        image = detector_image(signal, truth, rng)
        nominal = pixel_A * (1 + rng.uniform(-0.03, 0.03))
        if d < args.first:
            continue
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            res = calibrate(image, nominal, specimen=spec, microscope=base, strict=False,
                            frozen_phonons=args.fit_phonons)  # fmt: skip
        seconds = time.perf_counter() - t0
        records.append(
            record(
                d, seconds, truth, res,
                nominal_pixel=nominal,
                warnings=[str(w.message) for w in caught],
            )
        )  # fmt: skip
        print_records(records[-1:], res)
        for w in records[-1]["warnings"]:
            print(f"warning: {w}")
    print_records(records)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(records, fh, indent=1, default=float)


if __name__ == "__main__":
    main()
