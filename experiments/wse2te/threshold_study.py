"""Choose the decoding threshold (and check the predict edge band) on VALIDATION images, then
measure the choice on the TEST images — for the shipped wse2te model, without retraining.

Validation: seed `evaluate.VALIDATION_SEED` (2024); test: `evaluate.TEST_SEED` (777, what
`evaluate.py` reports); both disjoint from training (fold_in(key(0), step)) and the training-time
validation (key(12345)). Three sets each:
- `eval`: realistic rates, 128 px images scored on the whole image by `model.logits` (as
  `evaluate.py`);
- `train`: rare classes enriched, same;
- `fields`: realistic rates, 1024 px micrographs through `stemjax.predict` (tiles, reflect-
  padded edges: the user's path);
- `tails`: realistic rates, 128 px, the microscope's tails: a third of the images from each of
  `evaluate.STRESS_OVERRIDES` (Δf uniform ±60 Å; σ uniform 0.2–0.8 Å; the aberrations' spread
  doubled), one quantity widened at a time as in the stress tests.
Every set is decoded once at a low threshold (`FLOOR`) with each detection's score p_def kept;
a higher threshold t is then exactly `score > t` (local maxima do not depend on it).

Rule (fixed before looking at the test sets): the threshold on `GRID` with the highest mean
class-correct F1 over the validation sets, interior scoring (edge `EDGE_A`); values within
`TIE` of the best count as tied and the lowest of them wins (recall is the headline). Up to
model 6750 the mean ran over eval, train and fields; from model 9750 on it includes `tails`
(`--no-tails` for the old rule), so that the microscope's tails, where precision is lowest,
weigh in the choice instead of breaking near-ties by chance. Also
reported: whole-image scoring, per-class thresholds are not used (see REPORT.md), and precision
and recall vs the width of the edge band at 0.5 and at the chosen threshold.

    python experiments/wse2te/threshold_study.py            # ≈ 20 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from evaluate import DRAWS, STRESS_OVERRIDES, TEST_SEED, VALIDATION_SEED, collect, score
from matplotlib.figure import Figure

from stemjax.config import load_config, to_runtime
from stemjax.predict import EDGE_A, load_model, predict
from stemjax.trainingdata.pipeline import build_batch_maker

HERE = Path(__file__).parent
FLOOR = 0.02
GRID = (0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)
TIE = 1e-4
EDGES_PX = (0, 1, 2, 3, 4, 6, 8)
"""Edge bands (model px, 0.2074 Å) for the band-width table."""


def collect_fields(model, n, size, seed, site_prior="eval", tta=False):
    """`n` micrographs of `size`² px at the evaluation prior through `predict` (edge band 0,
    threshold FLOOR, decoding at `site_prior`, `tta` as predict's), in the `evaluate.collect`
    format (points in model px)."""
    cfg = load_config([f"data.image_size_px={size}", "data.batch_size=1", "data.prior=eval"])
    maker = build_batch_maker(*to_runtime(cfg))
    px = maker.pixel_size
    preds, gts = [], []
    t0 = time.perf_counter()
    for i in range(n):
        b = jax.device_get(maker.make_batch(jax.random.fold_in(jax.random.key(seed), i)))
        d = predict(model, [np.asarray(b.images[0])], pixel_size_A=px, threshold=FLOOR,
                    edge_A=0.0, keep_images=False, progress=False,
                    site_prior=site_prior, tta=tta).defects  # fmt: skip
        preds.append(
            {"points": d[["y_A", "x_A"]].to_numpy() / px, "classes": d["class_id"].to_numpy(),
             "scores": d["score"].to_numpy()}
        )  # fmt: skip
        gts.append({"points": b.points[0], "classes": b.classes[0], "valid": b.valid[0]})
    nan = np.full(n, np.nan)
    return {
        "preds": preds,
        "gts": gts,
        **{k: nan for k in DRAWS},
        "registry": maker.registry,
        "pixel_size": px,
        "settings": {"prior": "eval", "images": n, "size_px": size, "seed": seed,
                     "site_prior": site_prior,
                     "overrides": [], "seconds": time.perf_counter() - t0},
    }  # fmt: skip


def collect_tails(model, batches, seed, site_prior="eval", tta=False):
    """The `tails` set: `batches` batches of 128 px realistic-rate images split evenly over the
    stress tests' priors (one microscope quantity widened per share), merged into one
    `evaluate.collect` record. Each share draws from its own seed (`seed` + 1, + 2, + 3), so
    its images differ from the `eval` set's."""
    parts = [
        collect(model, "eval", max(1, batches // len(STRESS_OVERRIDES)), seed=seed + k + 1,
                overrides=ov, floor=FLOOR, site_prior=site_prior, verbose=False, tta=tta)
        for k, ov in enumerate(STRESS_OVERRIDES.values())
    ]  # fmt: skip
    merged = {key: [x for d in parts for x in d[key]] for key in ("preds", "gts")}
    merged.update({k: np.concatenate([d[k] for d in parts]) for k in DRAWS})
    merged["registry"], merged["pixel_size"] = parts[0]["registry"], parts[0]["pixel_size"]
    merged["settings"] = {**parts[0]["settings"], "images": len(merged["preds"]),
                          "overrides": {k: list(v) for k, v in STRESS_OVERRIDES.items()},
                          "seconds": sum(d["settings"]["seconds"] for d in parts)}  # fmt: skip
    return merged


def curves(data, edge_A):
    """Per threshold on GRID: recall, precision, F1 (class-correct), spurious, missed and the
    per-class recall."""
    rows = []
    for t in GRID:
        r, _ = score(data, t, edge_A)
        c = np.asarray(r.confusion)
        rows.append(
            {"threshold": t, "recall": r.recall, "precision": r.precision, "f1": r.f1,
             "gt": r.n_ground_truth, "predicted": r.n_predicted,
             "spurious": int(c[0].sum()), "missed": int(c[:, 0].sum()),
             "class_recall": {k.name: k.recall for k in r.per_class}}
        )  # fmt: skip
    return rows


def choose(val_curves):
    """The rule of the module docstring on the interior curves of the validation sets."""
    mean_f1 = np.mean([[r["f1"] for r in c["interior"]] for c in val_curves.values()], axis=0)
    best = mean_f1.max()
    pick = int(np.flatnonzero(mean_f1 >= best - TIE)[0])
    return GRID[pick], {t: float(f) for t, f in zip(GRID, mean_f1, strict=True)}


def edge_table(data, thresholds):
    px = data["pixel_size"]
    out = []
    for e in EDGES_PX:
        for t in thresholds:
            r, _ = score(data, t, e * px)
            out.append({"edge_px": e, "edge_A": e * px, "threshold": t, "recall": r.recall,
                        "precision": r.precision, "gt": r.n_ground_truth})  # fmt: skip
    return out


def plot(study, chosen, path):
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    styles = {"eval": "C0", "train": "C3", "fields": "C2", "tails": "C1"}
    for ax, scoring in zip(axes, ("whole_image", "interior"), strict=True):
        for split, ls, mk in (("validation", "-", "o"), ("test", "--", "s")):
            for name, colour in styles.items():
                if name not in study[split]:
                    continue
                rows = study[split][name][scoring]
                rec = [r["recall"] for r in rows]
                prec = [r["precision"] for r in rows]
                ax.plot(rec, prec, ls=ls, marker=mk, ms=3, color=colour, lw=1,
                        label=f"{name} ({split})")  # fmt: skip
                k = GRID.index(chosen)
                ax.plot(rec[k], prec[k], "k*", ms=9, zorder=5)
                k5 = GRID.index(0.5)
                ax.plot(rec[k5], prec[k5], "kx", ms=7, zorder=5)
        ax.axhline(0.99, color="grey", lw=0.8, ls=":")
        ax.axvline(0.99, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("recall (class-correct)")
        ax.set_title("whole image" if scoring == "whole_image" else f"interior (edge {EDGE_A} Å)")
        ax.set_xlim(0.975, 1.0005)
        ax.set_ylabel("precision (class-correct)")
        ax.grid(alpha=0.3)
    axes[0].set_ylim(0.93, 1.0005)
    axes[1].set_ylim(0.95, 1.0005)
    axes[1].legend(fontsize=7, frameon=False, loc="lower left")
    fig.suptitle(f"threshold on p_def {GRID[0]}…{GRID[-1]}; × = 0.5 (before), ★ = {chosen}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="experiments/wse2te/model")
    p.add_argument("--batches", type=int, default=32, help="validation batches of 8 (128 px)")
    p.add_argument("--test-batches", type=int, default=16, help="test batches of 8 (128 px)")
    p.add_argument("--fields", type=int, default=8, help="1024 px micrographs per set")
    p.add_argument("--json", default=str(HERE / "threshold_study.json"))
    p.add_argument("--plot", default=str(HERE / "threshold_pr.png"), help="figure path")
    p.add_argument("--plot-only", action="store_true", help="redraw the figure from --json")
    p.add_argument(
        "--tta",
        action="store_true",
        help="score with 8-fold symmetry test-time augmentation (predict(tta=True))",
    )
    p.add_argument("--unshifted", action="store_true",
                   help="decode every set with the network's own (training-prior) odds; default: "
                   "each set with the prior shift to its own rates")  # fmt: skip
    p.add_argument("--no-tails", action="store_true",
                   help="leave out the tails set (the rule up to model 6750)")  # fmt: skip
    args = p.parse_args()
    if args.plot_only:
        study = json.loads(Path(args.json).read_text())
        plot(study, study["rule"]["chosen"], args.plot)
        return
    model = load_model(args.model)
    study = {}
    for split, seed, nb in (("validation", VALIDATION_SEED, args.batches),
                            ("test", TEST_SEED, args.test_batches)):  # fmt: skip
        shift = {k: "train" if args.unshifted else k for k in ("eval", "train")}
        sets = {
            "eval": collect(model, "eval", nb, seed=seed, floor=FLOOR, site_prior=shift["eval"],
                            verbose=False, tta=args.tta),
            "train": collect(model, "train", nb, seed=seed, floor=FLOOR,
                             site_prior=shift["train"], verbose=False, tta=args.tta),
            "fields": collect_fields(model, args.fields, 1024, seed, shift["eval"], args.tta),
        }  # fmt: skip
        if not args.no_tails:
            sets["tails"] = collect_tails(model, nb, seed, shift["eval"], args.tta)
        study["tta"] = args.tta
        study["site_prior"] = "training odds everywhere" if args.unshifted else "each set's own"
        study[split] = {
            name: {"images": d["settings"]["images"], "size_px": d["settings"]["size_px"],
                   "seed": seed, "whole_image": curves(d, None), "interior": curves(d, EDGE_A)}
            for name, d in sets.items()
        }  # fmt: skip
        if split == "validation":
            chosen, mean_f1 = choose(study["validation"])
            study["rule"] = {"chosen": chosen, "mean_validation_f1": mean_f1, "tie": TIE,
                             "sets": list(sets)}  # fmt: skip
            print(f"chosen threshold {chosen}; mean validation F1 by threshold {mean_f1}")
        study[split]["edge_band"] = {
            name: edge_table(d, sorted({0.5, chosen})) for name, d in sets.items()
        }
        print(f"{split}: done", flush=True)
    Path(args.json).write_text(json.dumps(study, indent=1, default=float))
    plot(study, study["rule"]["chosen"], args.plot)
    for split in ("validation", "test"):
        for name in study["rule"]["sets"]:
            for scoring in ("whole_image", "interior"):
                for r in study[split][name][scoring]:
                    if r["threshold"] in (0.5, study["rule"]["chosen"]):
                        print(f"{split:10s} {name:6s} {scoring:11s} t={r['threshold']}: "
                              f"R {r['recall']:.4f} P {r['precision']:.4f} F1 {r['f1']:.4f} "
                              f"(GT {r['gt']}, spurious {r['spurious']}, "
                              f"missed {r['missed']})")  # fmt: skip


if __name__ == "__main__":
    main()
