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
import dataclasses
import math
import os
from pathlib import Path

import jax.numpy as jnp
import matplotlib
import numpy as np
from matplotlib.figure import Figure

matplotlib.use("Agg")

from stemjax.calibrate import build_setup, calibrate, column_responses, synthetic_micrograph
from stemjax.calibrate.export import write_microscope_config
from stemjax.calibrate.local import refine_columns
from stemjax.calibrate.model import render_signal
from stemjax.calibrate.synthetic import score_calibration
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
responses, _ = column_responses(
    specimen,
    microscope,
    truth["pixel_size_angstrom"],
    classes=("SeTe", "SV", "VW"),
    frozen_phonons=0,
    oversampling=2,
)
setup = build_setup(specimen, responses, microscope, (96, 96), max_pixel_size=0.25)
image, info = synthetic_micrograph(setup, truth, defect_fraction=0.1, seed=7)

# %% [markdown]
# ## Fit
# `frozen_phonons=0, oversampling=2` keep the column responses cheap for this demo; leave the
# defaults (32 frozen phonons, converged phase grating) for real data.

# %%
cal = calibrate(
    image,
    0.2074,
    specimen=specimen,
    microscope=microscope,
    frozen_phonons=0,
    oversampling=2,
    strict=False,
    verbose=True,
)
print(cal.table().to_string(index=False))
if cal.defocus_sign_ambiguous:  # (Δf, C12) and (−Δf, −C12) fit this image equally well
    alt = cal.alternative
    print(
        f"also consistent (ΔNLL {alt['delta_nll']:+.2f}): Δf "
        f"{alt['values']['defocus_angstrom']:.1f} ± {alt['sigma']['defocus_angstrom']:.1f} Å, "
        f"C12 {alt['derived']['C12']:.1f} Å at φ12 {math.degrees(alt['derived']['phi12']):.0f}°"
    )
print("truth:", {k: round(v, 4) for k, v in truth.items()})
print("error vs truth (value, error/σ, within issue 7's tolerance):")
for name, (err, z, ok) in score_calibration(truth, cal).items():
    print(f"  {name:11s} {err:+9.3f}  {z:+5.1f}σ  {'ok' if ok else 'MISSED'}")
fig = cal.plot()
fig.savefig(OUT / "calibration.png", dpi=110)

# %% [markdown]
# ## A training prior for this microscope

# %%
path = write_microscope_config(
    cal, OUT / "microscope" / "wse2te_calibrated.yaml", name="wse2te_calibrated", overwrite=True
)
print(path.read_text())
print(
    f"train with: python -m stemjax.train +experiment=wse2te microscope=wse2te_calibrated "
    f"'hydra.searchpath=[file://{OUT.resolve()}]'"
)

# %% [markdown]
# ## Local refinement: the displacement field around a defect
# Given the class average of one defect type (`stemjax.predict(...).class_averages()`), the
# columns around it are refined through the simulator with the calibrated probe, and their
# displacements are reported in pm with 1σ. Here a class average of 50 synthetic single Se
# vacancies (SV) whose first three shells are displaced radially by +5, −2.5 and +1.5 pm.

# %%
px, size, rot = truth["pixel_size_angstrom"], 64, truth["rotation_rad"]
sv_responses, _ = column_responses(specimen, microscope, px, classes=("SV",), frozen_phonons=0,
                                   oversampling=2)  # fmt: skip
local = build_setup(specimen, sv_responses, microscope, (size, size), max_pixel_size=px * 1.05)
xy = local.site_xy - local.basis  # the vacancy's chalcogen site at the origin
local = dataclasses.replace(local, site_xy=xy)
dist = np.hypot(*xy.T)
rel = xy @ np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]).T
shells = ((1.95, 5.0), (3.35, -2.5), (3.85, 1.5))  # (distance Å, radial displacement pm)
radial = sum(np.where(np.abs(dist - r) < 0.15, u, 0.0) for r, u in shells)
shift_px = radial[:, None] * rel / np.maximum(dist, 1e-9)[:, None] / 100.0 / px
site_class = (dist < 0.1).astype(np.int32)
probe = {k: cal.values[k] for k in ("defocus_angstrom", "c12_x_angstrom", "c12_y_angstrom",
                                    "source_size_angstrom")}  # fmt: skip
values = {**truth, "origin_x_px": (size - 1) / 2, "origin_y_px": (size - 1) / 2,
          "stretch": 0.0, "shear": 0.0}  # fmt: skip
clean = np.asarray(render_signal({k: jnp.asarray(v) for k, v in values.items()}, local,
                                 site_class=jnp.asarray(site_class),
                                 site_offsets_px=jnp.asarray(shift_px)))  # fmt: skip
rng = np.random.default_rng(0)
average = np.mean([rng.poisson(3700 * np.maximum(clean, 0)) for _ in range(50)], axis=0)

field = refine_columns(average, px, "SV", specimen=specimen, microscope=microscope, probe=probe,
                       rotation_rad=rot, responses=sv_responses, steps=(150, 200))  # fmt: skip
cols = field.columns
cols["true_radial_pm"] = sum(np.where(np.abs(cols.distance_A - r) < 0.15, u, 0.0)
                             for r, u in shells)  # fmt: skip
print(cols.round(2).to_string(index=False))
rms = float(np.sqrt(np.mean((cols.radial_pm - cols.true_radial_pm) ** 2)))
print(f"radial RMS error {rms:.2f} pm")

# %%
fig = Figure(figsize=(5, 5))
ax = fig.add_subplot()
ax.imshow(average.T, cmap="gray", origin="lower")
x0 = (size - 1) / 2 + cols.x_A / px
y0 = (size - 1) / 2 + cols.y_A / px
ax.quiver(x0, y0, cols.dx_pm, cols.dy_pm, color="tab:orange", angles="xy", scale_units="xy",
          scale=0.5)  # fmt: skip
ax.set_title("SV class average: column displacements (pm, ×2 px/pm)")
fig.savefig(OUT / "displacements.png", dpi=110)
