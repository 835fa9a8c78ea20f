"""A training prior for one (synthetic) instrument, from its own micrograph: calibrate → export.

The REPORT's "Fine-tuning for one instrument" experiment: an instrument in the tail of the
shipped model's microscope prior (large source σ 0.70 Å, defocus offset +20 Å, C12 3 nm), one
96² px micrograph region of it (the calibration's forward model, ~3700 e⁻/px), fitted by
`stemjax.calibrate`; `write_microscope_config` turns the fit into `<out>/microscope/<name>.yaml`.
The shipped model is then fine-tuned on that prior (`trainer.init_from`, command in REPORT.md)
and both models are tested on images drawn at the instrument's true settings
(`TEST_OVERRIDES`, for `evaluate.py --override`).

    python experiments/wse2te/instrument_prior.py      # ≈ 2 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from stemjax.calibrate import build_setup, calibrate, column_responses, synthetic_micrograph
from stemjax.calibrate.export import write_microscope_config
from stemjax.calibrate.synthetic import score_calibration
from stemjax.microscope_prior import load_microscope_prior, mean_microscope
from stemjax.specimen import load_specimen_config

HERE = Path(__file__).parent
NAME = "instrument"
TRUTH = {
    "origin_x_px": 37.3, "origin_y_px": 52.1, "rotation_rad": math.radians(17.0),
    "pixel_size_angstrom": 0.2074, "stretch": 0.002, "shear": 0.001,
    "defocus_angstrom": 20.0, "c12_x_angstrom": 30 * math.cos(0.7),
    "c12_y_angstrom": 30 * math.sin(0.7), "c21_x_angstrom": 120.0, "c21_y_angstrom": -90.0,
    "source_size_angstrom": 0.70, "dose_electrons_per_px": 3700.0, "gain": 0.02,
    "offset": 100.0, "read_noise_electrons": 3.0,
}  # fmt: skip
"""The instrument's settings (calibration parameter names; C12 3 nm at 40°, C21 15 nm)."""

TEST_OVERRIDES = (
    "microscope.source_size_angstrom.mean=0.70", "microscope.source_size_angstrom.std=0.02",
    "microscope.defocus_angstrom.mean=20", "microscope.defocus_angstrom.std=3",
    "microscope.c12_angstrom.mean=30", "microscope.c12_angstrom.std=3",
    "microscope.phi12_rad.low=0.6", "microscope.phi12_rad.high=0.8",
    "microscope.c21_angstrom.mean=150", "microscope.c21_angstrom.std=20",
)  # fmt: skip
"""Test images at the instrument's settings, with small session-to-session variation; C23, Cs,
dose, specimen and corruption as the wse2te priors."""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(HERE / "instrument"), help="folder for microscope/")
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    specimen = load_specimen_config("wse2te")
    microscope = mean_microscope(load_microscope_prior("wse2te"))
    # the "instrument's" micrograph: the calibration forward model at TRUTH, 10 % defects
    responses, _ = column_responses(specimen, microscope, TRUTH["pixel_size_angstrom"],
                                    classes=("SeTe", "SV", "VW"), frozen_phonons=0,
                                    oversampling=2)  # fmt: skip
    setup = build_setup(specimen, responses, microscope, (96, 96), max_pixel_size=0.25)
    image, _ = synthetic_micrograph(setup, TRUTH, defect_fraction=0.1, seed=args.seed)
    # what a user does with their micrograph: nominal pixel size from the file
    cal = calibrate(image, 0.2074, specimen=specimen, microscope=microscope,
                    frozen_phonons=0, oversampling=2, strict=False)  # fmt: skip
    print(cal.table().to_string(index=False))
    if cal.defocus_sign_ambiguous:
        print(f"defocus sign ambiguous: alternative Δf "
              f"{cal.alternative['values']['defocus_angstrom']:.1f} Å")  # fmt: skip
    for name, (err, z, ok) in score_calibration(TRUTH, cal).items():
        print(f"  {name:11s} error {err:+9.3f} ({z:+5.1f}σ) {'ok' if ok else 'MISSED'}")
    path = write_microscope_config(cal, Path(args.out) / "microscope" / f"{NAME}.yaml",
                                   name=NAME, overwrite=True)  # fmt: skip
    print(f"wrote {path}:\n{path.read_text()}")


if __name__ == "__main__":
    main()
