"""Gap between the column-response fast mode and full multislice, on sampled wse2te specimens.

For each of a few random defective specimens (training prior: every class present) in a box of
`--box` Å, simulate the clean ADF image with full multislice (stemjax.physics.adf_image, exact
PRISM path or windowed multislice) and with the column mode (stemjax.trainingdata.columns), both
averaged over the same number of frozen-phonon configurations, and print: relative RMS of the
difference, and per class the ratio of column peak intensities (columns / multislice).

    python benchmarks/columns_gap.py [--box 20] [--samples 2] [--phonons 4]
"""

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from stemjax.physics.adf import Microscope, adf_image, plan_geometry
from stemjax.physics.probe import Aberrations
from stemjax.specimen import build_layout, load_specimen_config, sample_specimen
from stemjax.trainingdata.columns import precompute_column_responses, render_columns


def column_peaks(image, site_xy, pixel_size, radius=0.4):
    """Maximum of `image` within `radius` Å of each site (nearest pixels), (M,)."""
    n = image.shape[0]
    c = np.arange(n) * pixel_size
    out = []
    for x, y in site_xy:
        mx = (
            np.abs(((c - x + n * pixel_size / 2) % (n * pixel_size)) - n * pixel_size / 2) <= radius
        )
        my = (
            np.abs(((c - y + n * pixel_size / 2) % (n * pixel_size)) - n * pixel_size / 2) <= radius
        )
        out.append(image[np.ix_(mx, my)].max() if mx.any() and my.any() else np.nan)
    return np.array(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=float, default=20.0, help="box size in Å")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--phonons", type=int, default=4)
    parser.add_argument("--pixel", type=float, default=0.2074)
    parser.add_argument("--cell", type=float, default=16.0, help="column response cell (Å)")
    parser.add_argument("--method", default="prism", choices=("prism", "multislice"))
    args = parser.parse_args()

    cfg = load_specimen_config("wse2te")
    n = int(round(args.box / args.pixel))
    box = n * args.pixel
    layout = build_layout(cfg, (box, box), thermal=False)
    registry = layout.registry
    microscope = Microscope(
        energy=80e3,
        semiangle_cutoff=25.2,
        detector_inner=63.0,
        detector_outer=200.0,
        aberrations=Aberrations(C10=-5.0, C12=10.0, phi12=0.4),
        source_size=0.0,
    )
    z_offset = 3.0
    t0 = time.perf_counter()
    responses = precompute_column_responses(
        layout,
        microscope,
        pixel_size=args.pixel,
        cell_extent=args.cell,
        frozen_phonons=args.phonons,
    )
    t_pre = time.perf_counter() - t0
    render = jax.jit(
        lambda xy, t, w: render_columns(responses, microscope.astype(jnp.float32), xy, t, w, (n, n))
    )
    z = np.asarray(layout.content_z).reshape(-1) + z_offset
    nums = np.asarray(layout.content_numbers).reshape(-1)
    geometry = plan_geometry(
        (box, box),
        z[nums > 0],
        nums[nums > 0],
        microscope,
        scan_sampling=args.pixel,
        cell_thickness=2 * z_offset,
        method=args.method,
    )
    simulate = jax.jit(adf_image, static_argnames="geometry")
    rng = np.random.default_rng(0)
    rms, ratios, t_ms, t_col = [], {}, 0.0, 0.0
    for s in range(args.samples):
        spec = sample_specimen(jax.random.key(s), layout, "train")
        pos = np.asarray(spec.positions, np.float64)
        pos[:, 2] += z_offset
        # Per-atom thermal rms (Å) from the material config: site's (sublattice, class, slot).
        sub, cls = np.asarray(spec.site_sublattice), np.asarray(spec.site_class)
        slots = np.arange(len(pos)) % 2
        rms_atoms = np.asarray(layout.content_rms)[
            sub[np.arange(len(pos)) // 2], cls[np.arange(len(pos)) // 2], slots
        ]
        t0 = time.perf_counter()
        ms = 0.0
        for _ in range(max(1, args.phonons)):
            p = pos.copy()
            if args.phonons:
                p[:, :2] += rng.normal(size=(len(p), 2)) * rms_atoms[:, None]
            ms = ms + np.asarray(
                simulate(
                    jnp.asarray(p, jnp.float32),
                    spec.numbers,
                    spec.mask,
                    microscope.astype(jnp.float32),
                    geometry=geometry,
                )
            )
        ms = ms / max(1, args.phonons)
        t_ms += time.perf_counter() - t0
        site_type = responses.type_of[spec.site_sublattice, spec.site_class]
        t0 = time.perf_counter()
        col = np.asarray(render(spec.site_xy, site_type, spec.site_valid.astype(jnp.float32)))
        t_col += time.perf_counter() - t0
        rms.append(np.sqrt(np.mean((col - ms) ** 2)) / np.sqrt(np.mean(ms**2)))
        valid = np.asarray(spec.site_valid)
        xy = np.asarray(spec.site_xy)[valid]
        cls = np.asarray(spec.site_class)[valid]
        sub = np.asarray(spec.site_sublattice)[valid]
        pm, pc = column_peaks(ms, xy, args.pixel), column_peaks(col, xy, args.pixel)
        for k in range(registry.num_classes):
            for sl in (0, 1):
                sel = (cls == k) & (sub == sl) & np.isfinite(pm)
                if sel.any() and (k > 0 or True):
                    name = registry.name(k) if k else f"pristine-{registry.sublattices[sl]}"
                    if k and registry.sublattice(k) != registry.sublattices[sl]:
                        continue
                    ratios.setdefault(name, []).extend(list(pc[sel] / pm[sel]))
    print(
        f"box {box:.2f} Å ({n} px at {args.pixel} Å), {args.samples} specimens (train prior), "
        f"{args.phonons} frozen phonons; reference: {args.method}; "
        f"column precompute {t_pre:.1f} s"
    )
    print(
        f"relative RMS columns vs multislice: {np.mean(rms):.4f} "
        f"(per specimen {', '.join(f'{r:.4f}' for r in rms)})"
    )
    print(
        f"time per image: multislice {t_ms / args.samples:.2f} s, columns "
        f"{t_col / args.samples:.3f} s (incl. first-call compile)"
    )
    print(f"{'class':16s} {'n':>5s} {'peak ratio columns/multislice':>30s}")
    for name, r in ratios.items():
        print(f"{name:16s} {len(r):5d} {np.mean(r):16.4f} ± {np.std(r):.4f}")


if __name__ == "__main__":
    main()
