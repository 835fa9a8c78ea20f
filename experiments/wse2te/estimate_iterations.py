"""Does iterating `site_prior='estimate'` to a fixed point help?

`predict(site_prior='estimate')` (the shipped default) makes one step: decode at the training
odds, count each class per site, decode again shifted to those rates. Iterating the step (rates
from the last decoding, decode again; Saerens et al. 2002 with hard counts) converges to a
fixed point of the counts. This script runs the steps on micrographs written by
`benchmarks/predict_million.py` (its `synthetic_<i>.tif` and their truth `synthetic_<i>.npz`)
and scores each step by the DESIGN.md protocol (one-to-one within 0.8 Å, class-correct):

    python benchmarks/predict_million.py --prior train --images 16 --size 1024 \
        --workdir /tmp/enriched
    python experiments/wse2te/estimate_iterations.py --workdir /tmp/enriched --steps 3 \
        --json experiments/wse2te/sweep_eval/estimate_iterations_enriched.json

Step 0 is the training odds (no shift), step 1 the shipped `estimate`. Each step runs the
network once over the whole set.
"""

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np

from stemjax.evaluation import evaluate
from stemjax.predict import load_model, predict


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(Path(__file__).parent / "model"))
    p.add_argument("--workdir", required=True, help="a predict_million.py --workdir")
    p.add_argument("--steps", type=int, default=3, help="steps after the training odds")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    model = load_model(args.model)
    files = sorted(Path(args.workdir).glob("synthetic_*.tif"),
                   key=lambda f: int(re.findall(r"\d+", f.stem)[-1]))  # fmt: skip
    if not files:
        raise SystemExit(f"{args.workdir}: no synthetic_<i>.tif; run predict_million.py first")
    truth = {f.stem: np.load(f.with_suffix(".npz")) for f in files}
    names = list(model.registry.names)
    px = model.pixel_size_A
    rates, rows = model.train_prior, []
    for step in range(args.steps + 1):
        t = time.perf_counter()
        result = predict(model, files, site_prior=rates, keep_images=False, progress=False)
        seconds = time.perf_counter() - t
        preds, gts = [], []
        for image_id, c in truth.items():
            d = result.defects[result.defects["image_id"] == image_id]
            preds.append({"points": d[["y_A", "x_A"]].to_numpy() / px, "classes": d["class_id"]})
            gts.append({"points": c["points"], "classes": c["classes"]})
        s = evaluate(preds, gts, len(names), names, px)
        row = {
            "step": step,
            "site_prior": rates,
            "errors": int(s.n_errors),
            "recall": s.recall,
            "precision": s.precision,
            "found": {c.name: int(c.predicted) for c in s.per_class},
            "true": {c.name: int(c.support) for c in s.per_class},
            "class_recall": {c.name: c.recall for c in s.per_class},
            "seconds": seconds,
        }
        rows.append(row)
        print(f"step {step}: errors {row['errors']}, R {s.recall:.4f}, P {s.precision:.4f}, "
              f"found {row['found']} ({seconds:.0f} s)", flush=True)  # fmt: skip
        rates = result.site_rates()
    print(f"true {rows[0]['true']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"workdir": args.workdir, "steps": rows}, indent=1))


if __name__ == "__main__":
    main()
