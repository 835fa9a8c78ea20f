# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 — Calibrate the microscope from the micrograph itself
#
# The simulator is differentiable, so it can be fitted to a micrograph: `stemjax.calibrate`
# fits lattice origin, rotation, true pixel size and scan distortion, defocus, two-fold
# astigmatism C12/φ12, coma C21/φ21, source size, dose, detector gain/offset/read noise and a
# smooth background, with uncertainties from the curvature of the likelihood. The fit becomes
# a `conf/microscope/` prior, so the detector is trained for *your* instrument:
#
# ```bash
# python -m stemjax.train +experiment=wse2te microscope=wse2te_calibrated
# ```
#
# Here a synthetic micrograph with known settings stands in for yours (replace `image` by
# `stemjax.io.read_micrograph("your.dm4")`; give the region **raw detector counts**, not a
# normalised image: the noise model separates dose from gain through the variance).
#
# `STEMJAX_NOTEBOOK_OUT`: folder for the figure and the YAML (default `notebooks/_output`).

# %%
import math
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from stemjax.calibrate import build_setup, calibrate, column_responses, synthetic_micrograph
from stemjax.calibrate.export import write_microscope_config
from stemjax.microscope_prior import load_microscope_prior, mean_microscope
from stemjax.specimen import load_specimen_config

OUT = Path(os.environ.get("STEMJAX_NOTEBOOK_OUT", "notebooks/_output"))
OUT.mkdir(parents=True, exist_ok=True)
specimen = load_specimen_config("wse2te")
microscope = mean_microscope(load_microscope_prior("wse2te"))

# %% [markdown]
# ## A micrograph with known settings
# 96 × 96 px at a true 0.2095 Å/px (the file says 0.2074), rotated 25°, 0.3 % scan stretch,
# Δf = 8 Å, C12 = 25 Å, 10 % defective columns, ~3700 e⁻/px.

# %%
truth = {
    "origin_x_px": 41.2, "origin_y_px": 50.7, "rotation_rad": math.radians(25.0),
    "pixel_size_angstrom": 0.2095, "stretch": 0.003, "shear": -0.001,
    "defocus_angstrom": 8.0, "c12_x_angstrom": 25 * math.cos(1.0),
    "c12_y_angstrom": 25 * math.sin(1.0), "c21_x_angstrom": 60.0, "c21_y_angstrom": 20.0,
    "source_size_angstrom": 0.45, "dose_electrons_per_px": 3700.0, "gain": 0.02,
    "offset": 100.0, "read_noise_electrons": 3.0,
}  # fmt: skip
responses, _ = column_responses(specimen, microscope, truth["pixel_size_angstrom"],
                                classes=("SeTe", "SV", "VW"), frozen_phonons=0, oversampling=2)
setup = build_setup(specimen, responses, microscope, (96, 96), max_pixel_size=0.25)
image, info = synthetic_micrograph(setup, truth, defect_fraction=0.1, seed=7)

# %% [markdown]
# ## Fit
# `frozen_phonons=0, oversampling=2` keep the column responses cheap for this demo; leave the
# defaults (4 phonons, converged phase grating) for real data.

# %%
cal = calibrate(image, 0.2074, specimen=specimen, microscope=microscope, frozen_phonons=0,
                oversampling=2, strict=False, verbose=True)
print(cal.table().to_string(index=False))
print("truth:", {k: round(v, 4) for k, v in truth.items()})
fig = cal.plot()
fig.savefig(OUT / "calibration.png", dpi=110)

# %% [markdown]
# ## A training prior for this microscope

# %%
path = write_microscope_config(cal, OUT / "microscope" / "wse2te_calibrated.yaml",
                               name="wse2te_calibrated", overwrite=True)
print(path.read_text())
print(f"train with: python -m stemjax.train +experiment=wse2te microscope=wse2te_calibrated "
      f"'hydra.searchpath=[file://{OUT.resolve()}]'")
