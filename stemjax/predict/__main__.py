"""`python -m stemjax.predict <checkpoint> <images...> --out DIR`: defect table, summary, figures.

Writes to DIR: defects.csv and defects.parquet (one row per defect), sites.parquet (all lattice
sites), concentrations.csv, summary.json (model, images, counts, concentrations with confidence
intervals), and figures/ (concentrations, density maps per image, spatial statistics, class
averages). Refuses to overwrite any of these without --overwrite.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

OUTPUTS = (
    "defects.csv",
    "defects.parquet",
    "sites.parquet",
    "concentrations.csv",
    "summary.json",
    "figures",
)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m stemjax.predict",
        description="Find, classify and count every defect in ADF-STEM micrographs.",
    )
    p.add_argument("checkpoint", help="run directory of `python -m stemjax.train` (or a shipped "
                   "model folder, or a checkpoints/<step> folder)")  # fmt: skip
    p.add_argument("images", nargs="+", help=".dm3 .dm4 .emd .tif .tiff .npy micrographs")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--pixel-size", type=float, default=None, help="Å/px (overrides the files')")
    p.add_argument("--frame", type=int, default=None, help="frame of image stacks")
    p.add_argument("--tile", type=int, default=512, help="tile size (px at the model's pixel size)")
    p.add_argument("--margin", type=int, default=64, help="tile context margin (px)")
    p.add_argument(
        "--tta",
        action="store_true",
        help="8-fold symmetry test-time augmentation (8x the network time; default threshold "
        "the model's trainer.decode_threshold_tta)",
    )
    p.add_argument(
        "--threshold", type=float, default=None, help="defect probability (default: the model's)"
    )
    p.add_argument("--site-prior", default=None,
                   help="defect rates expected in the micrographs: a prior of the model's "
                   "config (e.g. eval, train) or per-site concentrations of every class as "
                   "NAME=RATE,NAME=RATE,…, or 'estimate' (from a first decoding at the training "
                   "odds; the logits are kept on disk under TMPDIR, ~2.4 GB per million atoms, "
                   "and decoded twice) (default: the model's trainer.decode_prior)")  # fmt: skip
    p.add_argument("--edge", type=float, default=None,
                   help="drop defects and sites within this many Å of an edge (default: "
                   "stemjax.predict.EDGE_A, 0.6)")  # fmt: skip
    p.add_argument("--raw-classes", action="store_true",
                   help="keep the network's class even where it belongs to the other "
                   "sublattice than the defect's site (default: the best class of the "
                   "site's sublattice)")  # fmt: skip
    p.add_argument("--no-figures", action="store_true", help="tables and summary only")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: best)")
    return p.parse_args(argv)


def parse_site_prior(text: str | None):
    """--site-prior: None, a prior's name, or NAME=RATE,… → {class name: rate}."""
    if text is None or "=" not in text:
        return text
    rates = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        try:
            rates[name.strip()] = float(value)
        except ValueError:
            raise ValueError(
                f"--site-prior {item!r}: expected NAME=RATE with RATE a number"
            ) from None
    return rates


def write_figures(result, out: Path) -> list[str]:
    """Concentrations, density maps, spatial statistics and class averages as PNGs."""
    from stemjax import analysis

    figs = out / "figures"
    figs.mkdir(exist_ok=True)
    written = []

    def save(fig, name):
        fig.savefig(figs / name, dpi=110, bbox_inches="tight")
        written.append(f"figures/{name}")

    def attempt(name, make):
        """A figure the data do not support (e.g. too few defects) is skipped with a warning."""
        try:
            save(make(), name)
        except ValueError as err:
            logging.getLogger(__name__).warning("skipped %s: %s", name, err)

    attempt("concentrations.png", lambda: analysis.plot_concentrations(result.concentrations()))
    if len(result.defects):
        maps = analysis.density_maps(result.defects, result.fields, classes=result.registry)
        for image_id in result.fields.index:
            attempt(
                f"density_{image_id}.png", lambda i=image_id: analysis.plot_density_maps(maps, i)
            )
        attempt(
            "spatial_statistics.png",
            lambda: analysis.plot_spatial_statistics(
                analysis.nearest_neighbour_test(result.defects, result.sites, n_random=100),
                analysis.pair_correlation(result.defects, result.sites, n_random=20),
            ),
        )
        attempt(
            "class_averages.png",
            lambda: analysis.plot_class_averages(result.class_averages(), classes=result.registry),
        )
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    out = Path(args.out)
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing and not args.overwrite:
        print(
            f"error: {out} already holds {existing}; pass --overwrite to replace them",
            file=sys.stderr,
        )
        return 2
    from stemjax.io import MicrographError
    from stemjax.predict import ModelLoadError, load_model, predict

    try:
        model = load_model(args.checkpoint, step=args.step)
        result = predict(
            model,
            args.images,
            pixel_size_A=args.pixel_size,
            frame=args.frame,
            tile_px=args.tile,
            margin_px=args.margin,
            tta=args.tta,
            threshold=args.threshold,
            site_prior=parse_site_prior(args.site_prior),
            sublattice_consistent=not args.raw_classes,
            **({} if args.edge is None else {"edge_A": args.edge}),
        )
    except (MicrographError, ModelLoadError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    result.defects.to_csv(out / "defects.csv", index=False)
    result.defects.to_parquet(out / "defects.parquet", index=False)
    result.sites.to_parquet(out / "sites.parquet", index=False)
    conc = result.concentrations()
    conc.to_csv(out / "concentrations.csv")
    figures = [] if args.no_figures else write_figures(result, out)
    summary = {
        "model": {
            "source": str(model.source),
            "step": model.step,
            "pixel_size_A": model.pixel_size_A,
            "classes": list(model.registry.defect_names),
        },
        "images": json.loads(result.fields.reset_index().to_json(orient="records")),  # NaN → null
        "n_defects": int(len(result.defects)),
        "n_sites": int(len(result.sites)),
        "counts": {k: int(v) for k, v in result.defects["class_name"].value_counts().items()},
        "n_moved_to_site_sublattice": int(
            (result.defects["class_name"] != result.defects["network_class_name"]).sum()
        ),
        "concentrations": json.loads(conc.reset_index().to_json(orient="records")),
        "figures": figures,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"{len(result.defects)} defects on {len(result.sites)} sites in "
          f"{len(result.fields)} image(s) → {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
