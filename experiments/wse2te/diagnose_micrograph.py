"""Why does the model fail on one synthetic micrograph? Re-simulate it and vary one cause at a time.

Re-draws micrograph `--index` of `benchmarks/predict_million.py` (key `--seed` + index, the same
evaluation prior and size), prints its full microscope draw, then simulates variants in which
one quantity is changed and every other random draw (specimen, microscope, corruption) is kept:
an aberration set to zero, the dose scaled, a corruption effect switched off. Each variant is
analysed by `stemjax.predict` (shipped decoding) and scored by the DESIGN.md protocol on the
same interior region as the million-atom benchmark. Variants are `VariantMaker`s: the pipeline's
own batch maker with its microscope draw or corruption key changed through its hooks
(`BatchMaker.draw_microscope`, `BatchMaker.example_keys`). The variant that removes most errors
names the cause.

    python experiments/wse2te/diagnose_micrograph.py --index 64 [--size 1024]
"""

import argparse
import dataclasses
from dataclasses import field

import jax
import numpy as np

from stemjax.config import load_config, to_runtime
from stemjax.corrupt.config import ContaminationConfig
from stemjax.evaluation import evaluate
from stemjax.physics import aberration_phase_rms, wavelength
from stemjax.predict import EDGE_A, load_model, predict
from stemjax.trainingdata.pipeline import BatchMaker, build_batch_maker

ABERRATIONS = ("C10", "C12", "C21", "C23", "C30")
"""Aberration coefficients (Å) a variant can set."""


@dataclasses.dataclass(frozen=True)
class VariantMaker(BatchMaker):
    """The batch maker of `base` with one cause changed and every other random draw kept.

    change: aberration symbol → value (Å), 'source_size' → 1σ (Å), 'dose' → factor.
    other_corruption: draw the corruption (noise, drift, background) from another key.
    """

    change: dict = field(default_factory=dict)
    other_corruption: bool = False

    @classmethod
    def of(cls, base: BatchMaker, **kwargs):
        fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(BatchMaker)}
        return cls(**{**fields, **kwargs})

    def example_keys(self, key):
        k_spec, k_mic, k_cor = super().example_keys(key)
        return k_spec, k_mic, jax.random.fold_in(k_cor, 1) if self.other_corruption else k_cor

    def draw_microscope(self, key):
        mic, dose = super().draw_microscope(key)
        ab = {k: v for k, v in self.change.items() if k in ABERRATIONS}
        if ab:
            mic = dataclasses.replace(mic, aberrations=dataclasses.replace(mic.aberrations, **ab))
        if "source_size" in self.change:
            mic = dataclasses.replace(mic, source_size=self.change["source_size"])
        return mic, dose * self.change.get("dose", 1.0)


def _describe(mic, dose):
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
    base = build_batch_maker(*to_runtime(cfg))
    key = jax.random.key(args.seed + args.index)
    mic, dose = base.microscope(key)
    print(f"micrograph {args.index}: {_describe(mic, dose)}")

    corruption = base.corruption
    no_contamination = dataclasses.replace(corruption, contamination=ContaminationConfig(0, 0))
    no_warp = dataclasses.replace(
        corruption,
        warp=dataclasses.replace(
            corruption.warp, linear_drift_max_frac=0.0, nonlinear_drift_rms_max_A=0.0,
            jitter_rms_min_A=0.0, jitter_rms_max_A=0.0, flyback_amp_max_A=0.0,
        ),
    )  # fmt: skip
    # label → the VariantMaker's settings; one change each
    variants = {
        "as drawn": {},
        "other noise, drift and background": {"other_corruption": True},
        "Δf = 0": {"change": {"C10": 0.0}},
        "Δf halved": {"change": {"C10": 0.5 * float(mic.aberrations.C10)}},
        "C12 = 0": {"change": {"C12": 0.0}},
        "C21 = 0": {"change": {"C21": 0.0}},
        "C23 = 0": {"change": {"C23": 0.0}},
        "Cs = 0": {"change": {"C30": 0.0}},
        "C12 = C21 = C23 = Cs = 0": {"change": {"C12": 0.0, "C21": 0.0, "C23": 0.0, "C30": 0.0}},
        "dose × 2": {"change": {"dose": 2.0}},
        "source σ − 0.1 Å": {"change": {"source_size": float(mic.source_size) - 0.1}},
        "no contamination": {"corruption": no_contamination},
        "no scan distortion": {"corruption": no_warp},
    }
    names = list(model.registry.names)
    px = base.pixel_size
    edge = EDGE_A / px
    print(
        "\n| variant | probe phase rms (rad) | dose (e⁻/px) | defects | errors | recall | "
        "precision | class-agnostic recall | class-agnostic precision |\n" + "|---" * 9 + "|"
    )
    for label, settings in list(variants.items())[: args.variants]:
        maker = VariantMaker.of(base, **settings)
        m, dose = maker.microscope(key)
        rms = float(aberration_phase_rms(m.semiangle_cutoff, wavelength(m.energy), m.aberrations))
        b = jax.device_get(maker.make_batch(key))
        v = b.valid[0] & np.all((b.points[0] >= edge) & (b.points[0] <= args.size - 1 - edge), 1)
        gt = {"points": b.points[0][v], "classes": b.classes[0][v]}
        d = predict(model, b.images[0], pixel_size_A=px, progress=False, keep_images=False).defects
        pred = {"points": d[["y_A", "x_A"]].to_numpy() / px, "classes": d["class_id"].to_numpy()}
        s = evaluate([pred], [gt], len(names), names, px)
        print(
            f"| {label} | {rms:.2f} | {float(dose):.0f} | {s.n_ground_truth} | {s.n_errors} | "
            f"{s.recall:.3f} | {s.precision:.3f} | "
            f"{s.detection_recall:.3f} | {s.detection_precision:.3f} |"
        )


if __name__ == "__main__":
    main()
