"""End-to-end analysis of a ~million-atom synthetic dataset with `stemjax.predict`.

Simulates `--images` micrographs of `--size`² px at the wse2te pixel size (0.2074 Å/px) with the
training-data pipeline at the EVALUATION prior (realistic defect rates; `--prior train` for the
rare-class-enriched one, e.g. to measure `--site-prior`; column-mode simulation
and the full corruption model), writes them as .tif files (not timed; a later run with the same
`--workdir`, config and seed reuses them and their truth, `synthetic_<i>.npz`), then times the
analysis a user runs: `predict` on the files (read, resample, normalise, tiled U-Net, decode, column
finding), concentrations, spatial statistics, class averages and figures. Prints atoms/s, total
time and the recovered concentrations against the truth, plus recall / precision by the
DESIGN.md protocol (one-to-one within 0.8 Å). `predict` drops defects and sites within
`stemjax.predict.EDGE_A` (0.6 Å) of a micrograph's edge; the truth is restricted to the same
region.

    python benchmarks/predict_million.py --model experiments/wse2te/model [--images 4 --size 4096]
"""

import argparse
import hashlib
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from omegaconf import OmegaConf

from stemjax import analysis
from stemjax.config import load_config, to_runtime
from stemjax.evaluation import evaluate
from stemjax.io import write_tif
from stemjax.predict import EDGE_A, load_model, predict
from stemjax.trainingdata.pipeline import build_batch_maker

DRAWN = ("defocus", "source_size", "dose", "phase_rms")
"""Per-micrograph microscope draws kept for the error breakdown (`trainingdata.Batch` fields)."""


def atoms_per_site(specimen, registry) -> dict[tuple[int, int], int]:
    """Atoms in a column by (sublattice id, class id): pristine and each defect's content."""
    from stemjax.specimen.materials import SUBLATTICES

    table = {
        (SUBLATTICES.index("metal"), 0): len(specimen.metal),
        (SUBLATTICES.index("chalcogen"), 0): len(specimen.chalcogen),
    }
    for i, d in enumerate(specimen.defects):
        table[(SUBLATTICES.index(d.sublattice), i + 1)] = len(d.content)
    return table


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="experiments/wse2te/model")
    p.add_argument("--images", type=int, default=4)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--batch-tiles", type=int, default=4)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--prior", default="eval", help="specimen prior the micrographs are drawn at")
    p.add_argument("--site-prior", default=None,
                   help="defect rates predict assumes: a prior of the model's config "
                   "(default: its trainer.decode_prior), or 'estimate'")  # fmt: skip
    p.add_argument("--threshold", type=float, default=None,
                   help="p_def threshold (default: the model's)")  # fmt: skip
    p.add_argument(
        "--tta",
        action="store_true",
        help="8-fold symmetry test-time augmentation (predict(tta=True))",
    )
    p.add_argument("--workdir", default=None, help="where the .tif files go (default: temp)")
    args = p.parse_args()

    model = load_model(args.model)
    t0 = time.perf_counter()
    cfg = load_config(
        [f"data.image_size_px={args.size}", "data.batch_size=1", f"data.prior={args.prior}"]
    )
    specimen, prior, corruption, data = to_runtime(cfg)
    maker = build_batch_maker(specimen, prior, corruption, data)
    per_site = atoms_per_site(specimen, maker.registry)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="stemjax_million_"))
    workdir.mkdir(parents=True, exist_ok=True)
    files, truth, draws, n_atoms = [], {}, {}, 0
    stamp = hashlib.sha256(f"{OmegaConf.to_yaml(cfg)}{args.seed}".encode()).hexdigest()
    for i in range(args.images):
        path, cache = workdir / f"synthetic_{i}.tif", workdir / f"synthetic_{i}.npz"
        if path.exists() and cache.exists() and str(np.load(cache)["stamp"]) == stamp:
            c = np.load(cache)  # this image, simulated before from the same config and key
        else:
            b = jax.device_get(maker.make_batch(jax.random.key(args.seed + i)))
            v = b.valid[0]
            sub, cls = b.sublattice[0][v], b.classes[0][v]
            write_tif(path, b.images[0], maker.pixel_size, overwrite=True)
            # predict drops the sites within EDGE_A of the edge: the truth is the same region
            edge = EDGE_A / maker.pixel_size
            inner = v & np.all((b.points[0] >= edge) & (b.points[0] <= args.size - 1 - edge), 1)
            c = {"points": b.points[0][inner], "classes": b.classes[0][inner],
                 "sublattice": b.sublattice[0][inner], "stamp": stamp,
                 "atoms": sum(per_site[(int(s), int(k))] for s, k in zip(sub, cls, strict=True)),
                 **{k: float(getattr(b, k)[0]) for k in DRAWN}}  # fmt: skip
            np.savez(cache, **c)
        files.append(path)
        n_atoms += int(c["atoms"])
        truth[path.stem] = (c["points"], c["classes"], c["sublattice"])
        draws[path.stem] = {k: float(c[k]) for k in DRAWN}
    gen_s = time.perf_counter() - t0

    # ---- the timed analysis --------------------------------------------------------------
    timings = {}
    t = time.perf_counter()
    result = predict(model, files, tile_px=args.tile, batch_tiles=args.batch_tiles,
                     site_prior=args.site_prior, threshold=args.threshold,
                     tta=args.tta)  # fmt: skip
    timings["predict (read, resample, U-Net, decode, sites)"] = time.perf_counter() - t
    t = time.perf_counter()
    conc = result.concentrations()
    timings["concentrations"] = time.perf_counter() - t
    t = time.perf_counter()
    nn = analysis.nearest_neighbour_test(result.defects, result.sites, n_random=100)
    pcf = analysis.pair_correlation(result.defects, result.sites, n_random=20)
    timings["spatial statistics"] = time.perf_counter() - t
    t = time.perf_counter()
    averages = result.class_averages()
    timings["class averages"] = time.perf_counter() - t
    t = time.perf_counter()
    out = workdir / "figures"
    out.mkdir(exist_ok=True)
    analysis.plot_concentrations(conc).savefig(out / "concentrations.png", dpi=110)
    analysis.plot_spatial_statistics(nn, pcf).savefig(out / "spatial.png", dpi=110)
    analysis.plot_class_averages(averages, classes=model.registry).savefig(
        out / "class_averages.png", dpi=110
    )
    timings["figures"] = time.perf_counter() - t
    total = sum(timings.values())

    dev = jax.devices()[0]
    print(
        f"\nMillion-atom analysis (jax {jax.__version__}, {dev.platform}: {dev.device_kind}, "
        f"{os.cpu_count()} host cores, {platform.machine()})"
    )
    print(
        f"{args.images} images of {args.size}² px at {maker.pixel_size} Å/px ({args.prior} prior), "
        f"{n_atoms:,} atoms, {sum(len(t[1]) for t in truth.values()):,} columns at least "
        f"{EDGE_A} Å inside the edges; "
        f"simulated or reloaded in {gen_s:.0f} s (not timed below); model step {model.step} "
        f"from {model.source}; site prior "
        f"{args.site_prior or model.decode_prior or model.train_prior}, "
        f"threshold {args.threshold or model.threshold_for(args.tta)}"
        + (", 8-fold test-time augmentation" if args.tta else "")
    )
    print("\n| stage | s |\n|---|---|")
    for k, v in timings.items():
        print(f"| {k} | {v:.1f} |")
    print(f"| **total** | **{total:.1f}** |")
    print(f"\n**{n_atoms / total:,.0f} atoms/s**, total {total / 60:.2f} min")

    # ---- recovered vs truth: the DESIGN.md protocol (stemjax.evaluation.evaluate) -----------
    from stemjax.specimen.materials import SUBLATTICES

    names = list(model.registry.names)
    px = maker.pixel_size
    preds, gts = [], []
    sites_true = {name: 0 for name in SUBLATTICES}
    for image_id, (pts, cls, sub) in truth.items():
        for s in sub:
            sites_true[SUBLATTICES[int(s)]] += 1
        d = result.defects[result.defects["image_id"] == image_id]
        preds.append({"points": d[["y_A", "x_A"]].to_numpy() / px, "classes": d["class_id"]})
        gts.append({"points": pts, "classes": cls})
    scores = evaluate(preds, gts, len(names), names, px)
    print(
        "\n| class | true count | found | recall | precision | true per site | "
        "recovered per site |\n|---|---|---|---|---|---|---|"
    )
    fmt = lambda v: "nan" if v is None else f"{v:.3f}"  # noqa: E731
    for c in scores.per_class:
        sub = model.registry[c.id].sublattice
        print(
            f"| {c.name} | {c.support} | {c.predicted} | {fmt(c.recall)} | {fmt(c.precision)} | "
            f"{100 * c.support / sites_true[sub]:.3f} % | "
            f"{100 * conc.loc[c.name, 'per_site']:.3f} % |"
        )
    print(
        f"| all | {scores.n_ground_truth} | {scores.n_predicted} | {fmt(scores.recall)} | "
        f"{fmt(scores.precision)} | | |"
    )
    # where the errors are: the micrographs with the most, and their microscope draws
    per_image = []
    for image_id, pred, gt in zip(truth, preds, gts, strict=True):
        s = evaluate([pred], [gt], len(names), names, px)
        per_image.append((s.n_errors, image_id, s, draws[image_id]))
    per_image.sort(key=lambda r: -r[0])
    total_errors = sum(r[0] for r in per_image)
    print(
        f"\nerrors (missed + false, class-correct) per micrograph: {total_errors} in all; the "
        "five with the most:\n\n| micrograph | Δf (Å) | probe phase rms (rad) | σ (Å) | "
        "dose (e⁻/px) | defects | errors | recall | precision |\n" + "|---" * 9 + "|"
    )
    for errors, image_id, s, d in per_image[:5]:
        print(
            f"| {image_id} | {d['defocus']:+.1f} | {d['phase_rms']:.2f} | {d['source_size']:.3f} | "
            f"{d['dose']:.0f} | "
            f"{s.n_ground_truth} | {errors} | {fmt(s.recall)} | {fmt(s.precision)} |"
        )
    # errors against the probe's aberrations (every aberration, Δf included, in one number)
    rms = np.array([r[3]["phase_rms"] for r in per_image])
    edges = np.quantile(rms, np.linspace(0, 1, 5))
    print("\n| probe phase rms (rad) | micrographs | defects | errors | recall | precision |\n"
          + "|---" * 6 + "|")  # fmt: skip
    which = np.clip(np.searchsorted(edges, rms, side="right") - 1, 0, 3)  # quartile of each
    for q, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        rows = [r for r, w in zip(per_image, which, strict=True) if w == q]
        gt = sum(r[2].n_ground_truth for r in rows)
        found = sum(r[2].n_predicted for r in rows)
        tp = sum(r[2].n_correct for r in rows)
        recall, precision = (tp / gt if gt else None), (tp / found if found else None)
        print(f"| {lo:.2f} – {hi:.2f} | {len(rows)} | {gt} | {sum(r[0] for r in rows)} | "
              f"{fmt(recall)} | {fmt(precision)} |")  # fmt: skip

    # where the surplus of an over-counted class comes from: the true class of each false
    # detection (confusion column; 'none' = no true defect within 0.8 Å) and its micrographs
    def false_detections(metrics):
        return metrics.predicted - metrics.true_positives

    conf = np.asarray(scores.confusion)
    for k, c in enumerate(scores.per_class):
        false = false_detections(c)
        if c.predicted <= c.support or false == 0:
            continue
        column = conf[:, c.id]
        sources = ", ".join(f"{names[g] if g else 'none'} {int(column[g])}"
                            for g in np.flatnonzero(column) if g != c.id)  # fmt: skip
        where = sorted(((false_detections(s.per_class[k]), image_id)
                        for _, image_id, s, _ in per_image), reverse=True)  # fmt: skip
        where = ", ".join(f"{i} {n}" for n, i in where[:4] if n)
        print(f"\n{c.name}: {c.predicted} found for {c.support} true; its {false} false "
              f"detections are truly: {sources}; micrographs with the most: {where}")  # fmt: skip
    print(f"\nsites found {len(result.sites):,} vs true {sum(sites_true.values()):,}; "
          f"figures in {out}")  # fmt: skip
    coherence = result.fields["lattice_coherence"]
    print(f"lattice orientation per micrograph (class averages in the lattice frame): coherence "
          f"min {coherence.min():.3f}, median {coherence.median():.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
