"""Why does the model fail on one synthetic micrograph? Re-simulate it and vary one cause at a time.

Re-draws micrograph `--index` of `benchmarks/predict_million.py` (key `--seed` + index, the same
evaluation prior and size), prints its full microscope draw, then simulates variants in which
one quantity is changed and every other random draw (specimen, microscope, corruption) is kept:
an aberration set to zero, the dose scaled, a corruption effect switched off. Each variant is
analysed by `stemjax.predict` (shipped decoding) and scored by the DESIGN.md protocol on the
same interior region as the million-atom benchmark. The variant that removes most errors names
the cause.

    python experiments/wse2te/diagnose_micrograph.py --index 64 [--size 1024]
"""

import argparse
import dataclasses

import jax
import numpy as np

import stemjax.trainingdata.pipeline as pipeline
from stemjax.config import load_config, to_runtime
from stemjax.corrupt.config import ContaminationConfig
from stemjax.evaluation import evaluate
from stemjax.physics import aberration_phase_rms, wavelength
from stemjax.predict import EDGE_A, load_model, predict

# aberration coefficients a variant can set (Å)
ABERRATIONS = ("C10", "C12", "C21", "C23", "C30")
SAMPLE_MICROSCOPE = pipeline.sample_microscope  # the unpatched draws
CORRUPT = pipeline.corrupt


def _other_corruption(key, *args, **kwargs):
    """`corrupt` with another key: new noise, drift and background draws, same specimen."""
    return CORRUPT(jax.random.fold_in(key, 1), *args, **kwargs)


def _microscope_variant(change: dict):
    """`sample_microscope` with the draw changed by `change` (aberration → value in Å, or
    'dose' → factor, 'source_size' → value in Å); every random number is drawn as before."""

    def sample(key, prior, dtype=None):
        mic, dose = SAMPLE_MICROSCOPE(key, prior, dtype)
        ab = {k: v for k, v in change.items() if k in ABERRATIONS}
        if ab:
            mic = dataclasses.replace(mic, aberrations=dataclasses.replace(mic.aberrations, **ab))
        if "source_size" in change:
            mic = dataclasses.replace(mic, source_size=change["source_size"])
        return mic, dose * change.get("dose", 1.0)

    return sample


def _draw(key, prior):
    mic, dose = pipeline.sample_microscope(key, prior)
    a = mic.aberrations
    return (
        f"Δf {-float(a.C10):+.1f} Å, C12 {float(a.C12):.1f} Å "
        f"at {np.degrees(float(a.phi12)):.0f}°, "
        f"C21 {float(a.C21):.0f} Å, C23 {float(a.C23):.0f} Å, Cs {float(a.C30):.0f} Å, "
        f"source σ {float(mic.source_size):.3f} Å, dose {float(dose):.0f} e⁻/px"
    )


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="experiments/wse2te/model")
    p.add_argument("--index", type=int, default=64)
    p.add_argument("--seed", type=int, default=2024)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--variants", type=int, default=None, help="only the first N variants")
    args = p.parse_args()

    model = load_model(args.model)
    cfg = load_config([f"data.image_size_px={args.size}", "data.batch_size=1", "data.prior=eval"])
    specimen, prior, corruption, data = to_runtime(cfg)
    key = jax.random.key(args.seed + args.index)
    k_mic = jax.random.split(jax.random.split(key, 1)[0], 3)[1]  # as BatchMaker._sample
    print(f"micrograph {args.index}: {_draw(k_mic, prior)}")

    mic, _ = SAMPLE_MICROSCOPE(k_mic, prior)
    no_contamination = dataclasses.replace(corruption, contamination=ContaminationConfig(0, 0))
    no_warp = dataclasses.replace(
        corruption,
        warp=dataclasses.replace(
            corruption.warp, linear_drift_max_frac=0.0, nonlinear_drift_rms_max_A=0.0,
            jitter_rms_min_A=0.0, jitter_rms_max_A=0.0, flyback_amp_max_A=0.0,
        ),
    )  # fmt: skip
    # label → (microscope change, corruption prior, corruption function); one change each
    variants = {
        "as drawn": ({}, corruption, CORRUPT),
        "other noise, drift and background": ({}, corruption, _other_corruption),
        "Δf = 0": ({"C10": 0.0}, corruption, CORRUPT),
        "Δf halved": ({"C10": 0.5 * float(mic.aberrations.C10)}, corruption, CORRUPT),
        "C12 = 0": ({"C12": 0.0}, corruption, CORRUPT),
        "C21 = 0": ({"C21": 0.0}, corruption, CORRUPT),
        "C23 = 0": ({"C23": 0.0}, corruption, CORRUPT),
        "Cs = 0": ({"C30": 0.0}, corruption, CORRUPT),
        "C12 = C21 = C23 = Cs = 0": ({"C12": 0.0, "C21": 0.0, "C23": 0.0, "C30": 0.0},
                                     corruption, CORRUPT),
        "dose × 2": ({"dose": 2.0}, corruption, CORRUPT),
        "source σ − 0.1 Å": ({"source_size": float(mic.source_size) - 0.1}, corruption, CORRUPT),
        "no contamination": ({}, no_contamination, CORRUPT),
        "no scan distortion": ({}, no_warp, CORRUPT),
    }  # fmt: skip
    names = list(model.registry.names)
    print(
        "\n| variant | probe phase rms (rad) | dose (e⁻/px) | defects | errors | recall | "
        "precision | class-agnostic recall | class-agnostic precision |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    for label, (change, corr, corrupt_fn) in list(variants.items())[: args.variants]:
        sample = _microscope_variant(change)
        m, dose = sample(k_mic, prior)
        rms = float(aberration_phase_rms(m.semiangle_cutoff, wavelength(m.energy), m.aberrations))
        pipeline.sample_microscope, pipeline.corrupt = sample, corrupt_fn
        try:
            maker = pipeline.build_batch_maker(specimen, prior, corr, data)
            b = jax.device_get(maker.make_batch(key))
        finally:
            pipeline.sample_microscope, pipeline.corrupt = SAMPLE_MICROSCOPE, CORRUPT
        px = maker.pixel_size
        edge = EDGE_A / px
        v = b.valid[0] & np.all((b.points[0] >= edge) & (b.points[0] <= args.size - 1 - edge), 1)
        gt = {"points": b.points[0][v], "classes": b.classes[0][v]}
        res = predict(model, b.images[0], pixel_size_A=px, progress=False, keep_images=False)
        d = res.defects
        pred = {"points": d[["y_A", "x_A"]].to_numpy() / px, "classes": d["class_id"].to_numpy()}
        s = evaluate([pred], [gt], len(names), names, px)
        correct = sum(c.true_positives for c in s.per_class)
        errors = (s.n_ground_truth - correct) + (s.n_predicted - correct)
        agnostic = evaluate(
            [{"points": pred["points"], "classes": np.ones_like(pred["classes"])}],
            [{"points": gt["points"], "classes": (gt["classes"] > 0).astype(int)}],
            2, ["none", "defect"], px,
        )  # fmt: skip
        print(
            f"| {label} | {rms:.2f} | {float(dose):.0f} | {s.n_ground_truth} | {errors} | "
            f"{s.recall:.3f} | {s.precision:.3f} | "
            f"{agnostic.recall:.3f} | {agnostic.precision:.3f} |"
        )


if __name__ == "__main__":
    main()
