"""Throughput of `make_batch` at the training size, split into its stages.

Times, per image, on the default config (256×256 px at 0.2074 Å/px, wse2te): specimen sampling,
clean simulation (column mode; and full multislice for one image, the GPU default), corruption
and targets, and the whole jitted `make_batch`. Prints a table.

    python benchmarks/make_batch.py [--batch 8] [--multislice]
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp

from stemjax.config import load_config, to_runtime
from stemjax.corrupt import corrupt
from stemjax.microscope_prior import sample_microscope
from stemjax.physics.adf import adf_image, source_blur
from stemjax.specimen import sample_specimen
from stemjax.trainingdata.columns import render_columns
from stemjax.trainingdata.pipeline import build_batch_maker


def bench(fn, *args, repeat=3):
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    for _ in range(repeat):
        jax.block_until_ready(fn(*args))
    return (time.perf_counter() - t0) / repeat


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--multislice",
        action="store_true",
        help="also time full multislice of one training-size image",
    )
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    cfg = load_config([f"data.batch_size={args.batch}", *args.overrides])
    specimen_cfg, prior, corruption, data = to_runtime(cfg)
    t0 = time.perf_counter()
    maker = build_batch_maker(specimen_cfg, prior, corruption, data)
    t_plan = time.perf_counter() - t0
    b = args.batch
    keys = jax.random.split(jax.random.key(0), b)
    layout, px = maker.layout, maker.pixel_size
    canvas = (maker.canvas_px, maker.canvas_px)
    out = (data.image_size_px, data.image_size_px)

    spec_fn = jax.jit(jax.vmap(lambda k: sample_specimen(k, layout, data.prior)))
    mic_fn = jax.jit(jax.vmap(lambda k: sample_microscope(k, prior)))
    specimens = spec_fn(keys)
    microscopes, doses = mic_fn(keys)

    def simulate(spec, mic):
        site_type = maker.responses.type_of[spec.site_sublattice, spec.site_class]
        img = render_columns(
            maker.responses,
            mic,
            spec.site_xy,
            site_type,
            spec.site_valid.astype(jnp.float32),
            canvas,
        )
        return source_blur(img, mic.source_size, (px, px))

    sim_fn = jax.jit(jax.vmap(simulate))
    clean = sim_fn(specimens, microscopes)
    points = specimens.site_xy / px - data.margin_px
    cor_fn = jax.jit(
        jax.vmap(
            lambda k, c, p, d: corrupt(
                k, c, p, corruption, pixel_size=px, out_shape=out, dose_electrons_per_pixel=d
            )[0]
        )
    )
    rows = [
        ("specimen sampling", bench(spec_fn, keys)),
        ("microscope sampling", bench(mic_fn, keys)),
        ("clean simulation (columns)", bench(sim_fn, specimens, microscopes)),
        ("corruption", bench(cor_fn, keys, clean, points, doses)),
        (
            "make_batch total (jitted, all stages + targets)",
            bench(maker.make_batch, jax.random.key(1)),
        ),
    ]
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, jax {jax.__version__} on "
        f"{jax.devices()[0].platform}; {cfg.specimen.name}/{cfg.microscope.name}, "
        f"{out[0]}x{out[1]} px at {px} Å/px (canvas {canvas[0]} px), batch {b}"
    )
    print(f"plan (layout + column Gram matrices, once per config): {t_plan:.1f} s")
    print(f"{'stage':50s} {'ms / image':>12s} {'images / s':>12s}")
    for name, t in rows:
        print(f"{name:50s} {1e3 * t / b:12.2f} {b / t:12.2f}")

    if args.multislice:
        ms = build_batch_maker(
            specimen_cfg,
            prior,
            corruption,
            type(data)(**{**data.__dict__, "simulation": "multislice"}),
        )
        spec = jax.tree.map(lambda x: x[0], specimens)
        mic = jax.tree.map(lambda x: x[0], microscopes)
        pos = spec.positions + jnp.array([0.0, 0.0, data.z_offset_angstrom])
        fn = jax.jit(lambda p, n, m, mc: adf_image(p, n, m, mc, ms.geometry))
        t = bench(fn, pos, spec.numbers, spec.mask, mic, repeat=1)
        g = ms.geometry
        print(
            f"{'clean simulation (full multislice, 1 image)':50s} {1e3 * t:12.1f} "
            f"{1 / t:12.3f}   [scan {g.scan_gpts} Nyquist probes, window {g.window_gpts}]"
        )


if __name__ == "__main__":
    main()
