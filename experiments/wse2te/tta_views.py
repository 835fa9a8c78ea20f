"""Which test-time-augmentation views help? Each of the 8 views' softmax on VALIDATION images
(seeds apart from the threshold study's), combined offline into: one view, the 4 that keep scan
rows as rows, the 4 that turn them into columns, all 8. Stress sets at 128 px and 1024 px fields
in one untiled pass. Writes sweep_eval/tta_views.json (REPORT.md, test-time augmentation).

    python experiments/wse2te/tta_views.py      # ≈ 5 min on 2 CPU cores
"""

import json
import sys
import time
from pathlib import Path

import jax
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from evaluate import DRAWS, STRESS_OVERRIDES, VALIDATION_SEED, score  # noqa: E402

from stemjax.config import load_config, to_runtime  # noqa: E402
from stemjax.evaluation import decode_defects  # noqa: E402
from stemjax.predict import EDGE_A, load_model  # noqa: E402
from stemjax.predict.inference import _dihedral  # noqa: E402
from stemjax.trainingdata.pipeline import build_batch_maker  # noqa: E402

COMBOS = {"plain": [0], "rows4": [0, 2, 4, 6], "cols4": [1, 3, 5, 7], "all8": list(range(8))}
THRESH = (0.5, 0.7, 0.8, 0.9, 0.95)
model = load_model(HERE / "model")
off = jax.numpy.asarray(model.logit_offsets("eval"))


def run(name, size, batches, batch_size, overrides, seed):
    cfg = load_config(
        [
            f"data.image_size_px={size}",
            f"data.batch_size={batch_size}",
            "data.prior=eval",
            *overrides,
        ]
    )
    maker = build_batch_maker(*to_runtime(cfg))
    data = {c: {"preds": [], "gts": []} for c in COMBOS}
    maxdet = (-(-size // (model.min_distance_px + 1))) ** 2
    t0 = time.perf_counter()
    for i in range(batches):
        b = jax.device_get(maker.make_batch(jax.random.fold_in(jax.random.key(seed), i)))
        x = jax.numpy.asarray(b.images)
        probs = [
            jax.nn.softmax(_dihedral(model.logits(_dihedral(x, k)), k, inverse=True), -1)
            for k in range(8)
        ]
        for c, ks in COMBOS.items():
            lg = jax.numpy.log(sum(probs[k] for k in ks) / len(ks) + 1e-12) + off
            det = jax.device_get(
                decode_defects(
                    lg, threshold=0.5, min_distance_px=model.min_distance_px, max_detections=maxdet
                )
            )
            for j in range(x.shape[0]):
                ok = np.asarray(det.valid[j])
                data[c]["preds"].append(
                    {
                        "points": det.points[j][ok],
                        "classes": det.classes[j][ok],
                        "scores": det.scores[j][ok],
                    }
                )
                data[c]["gts"].append(
                    {"points": b.points[j], "classes": b.classes[j], "valid": b.valid[j]}
                )
    out = {}
    for c, d in data.items():
        n = len(d["preds"])
        d.update({k: np.full(n, np.nan) for k in DRAWS})
        d["registry"], d["pixel_size"] = maker.registry, maker.pixel_size
        d["settings"] = {"size_px": size}
        for t in THRESH:
            r, _ = score(d, t, EDGE_A)
            cor = round(r.recall * r.n_ground_truth)
            out[f"{c}@{t}"] = dict(
                gt=r.n_ground_truth,
                missed=r.n_ground_truth - cor,
                spurious=r.n_predicted - cor,
                recall=r.recall,
                precision=r.precision,
                f1=r.f1,
            )
            print(
                f"{name:10s} {c:6s} t={t}: missed {r.n_ground_truth - cor:3d} spurious "
                f"{r.n_predicted - cor:3d} of {r.n_ground_truth}",
                flush=True,
            )
    print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return out


res = {}
for k, (name, ov) in enumerate(STRESS_OVERRIDES.items()):
    res[name] = run(name, 128, 8, 8, ov, VALIDATION_SEED + 100 + k)
res["fields"] = run("fields", 1024, 6, 1, [], VALIDATION_SEED + 200)
(HERE / "sweep_eval" / "tta_views.json").write_text(json.dumps(res, indent=1))
