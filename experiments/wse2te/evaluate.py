"""Held-out evaluation of a trained wse2te model by the DESIGN.md protocol.

Draws `--batches` batches of fresh simulated images (keys from `--seed`, never used in training:
training uses fold_in(key(trainer.seed), step) and validation key(12345)) at the training image
size from the chosen prior — `eval` (realistic rates) or `train` (rare classes enriched) — runs
the model on whole images, decodes with the run's settings and scores: per-class precision,
recall, F1, localisation RMSE (pm), confusion matrix, and recall vs dose (per-image dose bins).

    python experiments/wse2te/evaluate.py --model experiments/wse2te/model --prior eval
"""

import argparse
import json
import time

import jax
import numpy as np

from stemjax.config import load_config, to_runtime
from stemjax.evaluation import decode_defects, evaluate, format_report
from stemjax.predict import load_model
from stemjax.trainingdata.pipeline import build_batch_maker


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="experiments/wse2te/model")
    p.add_argument("--prior", default="eval", choices=("eval", "train"))
    p.add_argument("--batches", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="image px (default: the model's)")
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--json", default=None, help="write the result dict here")
    args = p.parse_args()

    model = load_model(args.model)
    size = args.size or model.image_px
    cfg = load_config(
        [f"data.image_size_px={size}", f"data.batch_size={args.batch_size}",
         f"data.prior={args.prior}"]
    )  # fmt: skip
    maker = build_batch_maker(*to_runtime(cfg))
    preds, gts, doses, per_image = [], [], [], []
    t0 = time.perf_counter()
    for i in range(args.batches):
        b = jax.device_get(maker.make_batch(jax.random.fold_in(jax.random.key(args.seed), i)))
        logits = model.logits(b.images)
        det = jax.device_get(
            decode_defects(
                logits,
                threshold=model.decode_threshold,
                min_distance_px=model.min_distance_px,
                max_detections=1024,
            )
        )
        for j in range(b.images.shape[0]):
            pr = {"points": det.points[j], "classes": det.classes[j], "valid": det.valid[j]}
            gt = {"points": b.points[j], "classes": b.classes[j], "valid": b.valid[j]}
            preds.append(pr)
            gts.append(gt)
            doses.append(float(b.dose[j]))
            r = evaluate([pr], [gt], maker.registry.num_classes, None, maker.pixel_size)
            per_image.append((r.n_ground_truth, r.recall))
    secs = time.perf_counter() - t0
    names = list(maker.registry.names)
    result = evaluate(preds, gts, maker.registry.num_classes, names, maker.pixel_size)
    print(
        f"\nmodel {model.source} step {model.step}; prior {args.prior}; {len(preds)} images "
        f"of {size}² px; {secs:.0f} s"
    )
    print(format_report(result))
    # recall vs dose: pool GT-weighted recall in dose quartiles
    doses = np.asarray(doses)
    edges = np.quantile(doses, [0, 0.25, 0.5, 0.75, 1.0])
    print("\n| dose (e⁻/px) | images | GT defects | recall |\n|---|---|---|---|")
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = [k for k, d in enumerate(doses) if lo <= d <= hi]
        n = sum(per_image[k][0] for k in sel)
        tp = sum(per_image[k][0] * (per_image[k][1] or 0.0) for k in sel)
        rec = tp / n if n else float("nan")
        rows.append({"dose_lo": lo, "dose_hi": hi, "images": len(sel), "gt": n, "recall": rec})
        print(f"| {lo:.0f}–{hi:.0f} | {len(sel)} | {n} | {rec:.4f} |")
    if args.json:
        out = {
            "prior": args.prior,
            "images": len(preds),
            "size_px": size,
            "model_step": model.step,
            "result": result.to_dict(),
            "recall_vs_dose": rows,
        }
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)


if __name__ == "__main__":
    main()
