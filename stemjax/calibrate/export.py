"""A calibration → a `conf/microscope/` prior centred on the fitted values.

Widths: each fitted quantity gets std = max(3σ_fit, a floor for drift between the calibrated
region and the rest of a session: 5 Å defocus, 3 Å or 20 % C12, 20 Å or 30 % C21, 0.05 Å source
size, 10°/20° azimuths). Without odd aberrations an ADF image cannot tell (Δf, C12) from
(−Δf, −C12); when the fit flags that ambiguity, the prior keeps both: defocus centred between
the two reported solutions (the fixed Cs shifts the mirrored Δf, so not exactly on 0) with std
half their distance + 3σ, and a uniform C12 azimuth. The dose sets the probe current at the
micrograph's dwell time (`dwell_time_us`, else the base config's expected one; lognormal,
±25 %). Energy, convergence and detector angles, Cs and
C23 are copied from the base config (they are not fitted). One micrograph narrows the base
prior, it never widens it: a width is capped at the base config's std, and a quantity the fit
does not resolve (σ_fit ≥ the base std, e.g. C21 at a large source size) keeps the base prior.
The sign-ambiguous defocus is the exception: its prior spans both solutions.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import OmegaConf

from stemjax.microscope_prior import (
    ELECTRONS_PER_PA_US,
    MicroscopePrior,
    conf_dir,
    load_microscope_prior,
)

TWO_PI = 2.0 * math.pi


def _uniform_azimuth(high=TWO_PI):
    return {"low": 0.0, "high": high, "dist": "uniform"}


def _azimuth(value, sigma, floor_deg):
    return {
        "mean": float(value),
        "std": float(max(3 * sigma, math.radians(floor_deg))),
        "low": None,
        "high": None,
        "dist": "normal",
    }


def _narrowed(base_entry, value, sigma_fit, width):
    """Normal prior {mean: value, std: width} within the base entry's std; the base entry
    itself when the fit's σ is not below that std (unresolved) or the base has no std."""
    base_std = base_entry.get("std") if base_entry.get("dist", "normal") == "normal" else None
    if base_std is None:
        return {"mean": float(value), "std": float(width)}
    if sigma_fit >= base_std:
        return dict(base_entry)
    return {"mean": float(value), "std": float(min(width, base_std))}


def microscope_config(
    calibration,
    *,
    base: str = "wse2te",
    name: str | None = None,
    dwell_time_us: float | None = None,
):
    """DictConfig for `conf/microscope/` from a `Calibration` (checked against the schema).

    dwell_time_us: the micrograph's time per pixel (µs, all summed frames together), which
    turns the fitted dose (e⁻/px) into a probe current; the exported prior then fixes the dwell
    time at it. Default: the base config's expected dwell time (a uniform range's middle).
    """
    base_path = conf_dir() / "microscope" / f"{base}.yaml"
    if not base_path.is_file():
        raise FileNotFoundError(f"base: no microscope config {base_path}")
    cfg = OmegaConf.to_container(OmegaConf.load(base_path))
    v, s = calibration.values, calibration.sigma
    d, ds = calibration.derived, calibration.derived_sigma
    name = name or f"{base}_calibrated"
    cfg["name"] = name
    cfg["description"] = (
        f"calibrated from a {calibration.image.shape[0]}×{calibration.image.shape[1]} px "
        f"region by stemjax.calibrate (reduced χ² {calibration.reduced_chi2:.2f}); base {base}"
    )
    cfg["pixel_size_angstrom"] = float(v["pixel_size_angstrom"])
    alternative = getattr(calibration, "alternative", None)
    if calibration.defocus_sign_ambiguous:
        # both solutions inside the prior: centred between them (0 without the mirrored fit)
        other = alternative["values"]["defocus_angstrom"] if alternative else -v["defocus_angstrom"]
        cfg["defocus_angstrom"] = {
            "mean": float(0.5 * (v["defocus_angstrom"] + other)),
            "std": float(0.5 * abs(v["defocus_angstrom"] - other) + 3 * s["defocus_angstrom"]),
        }
        cfg["phi12_rad"] = _uniform_azimuth()
    else:
        cfg["defocus_angstrom"] = _narrowed(
            cfg["defocus_angstrom"],
            v["defocus_angstrom"],
            s["defocus_angstrom"],
            max(3 * s["defocus_angstrom"], 5.0),
        )
        cfg["phi12_rad"] = _azimuth(d["phi12"], ds["phi12"], 10.0)
    cfg["c12_angstrom"] = _narrowed(
        cfg["c12_angstrom"], d["C12"], ds["C12"], max(3 * ds["C12"], 0.2 * d["C12"], 3.0)
    )
    cfg["c21_angstrom"] = _narrowed(
        cfg["c21_angstrom"], d["C21"], ds["C21"], max(3 * ds["C21"], 0.3 * d["C21"], 20.0)
    )
    # an azimuth is only meaningful when the magnitude is resolved
    if ds["C21"] < 0.5 * d["C21"]:
        cfg["phi21_rad"] = _azimuth(d["phi21"], ds["phi21"], 20.0)
    else:
        cfg["phi21_rad"] = _uniform_azimuth()
    cfg["source_size_angstrom"] = dict(
        _narrowed(
            cfg["source_size_angstrom"],
            v["source_size_angstrom"],
            s["source_size_angstrom"],
            max(3 * s["source_size_angstrom"], 0.05),
        ),
        low=0.0,
    )
    if dwell_time_us is None:
        dwell = load_microscope_prior(base_path).dwell_time_us.expected()
    else:
        if not (math.isfinite(dwell_time_us) and dwell_time_us > 0):
            raise ValueError(f"dwell_time_us: expected a positive time per pixel (µs), got "
                             f"{dwell_time_us!r}")  # fmt: skip
        dwell = float(dwell_time_us)
        cfg["dwell_time_us"] = {"mean": dwell, "dist": "fixed"}
    current = float(v["dose_electrons_per_px"]) / (dwell * ELECTRONS_PER_PA_US)
    cfg["probe_current_pa"] = {"mean": current, "std": 0.25 * current, "dist": "lognormal"}
    out = OmegaConf.create(cfg)
    MicroscopePrior.from_config(out, source=f"calibrated microscope {name!r}")  # schema check
    return out


def write_microscope_config(
    calibration,
    path: str | Path | None = None,
    *,
    base="wse2te",
    name=None,
    dwell_time_us=None,
    overwrite=False,
) -> Path:
    """Write the calibrated prior as YAML (default: conf/microscope/<name>.yaml) and return
    the path; then `python -m stemjax.train +experiment=wse2te microscope=<name>` trains for it.
    A file outside conf/ needs `hydra.searchpath=[file://<dir above microscope/>]`. An
    existing file is kept unless `overwrite`.
    """
    cfg = microscope_config(calibration, base=base, name=name, dwell_time_us=dwell_time_us)
    path = Path(path) if path else conf_dir() / "microscope" / f"{cfg.name}.yaml"
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Microscope prior calibrated by stemjax.calibrate from a micrograph; base {base}.\n"
        "# Schema: stemjax.microscope_prior.MicroscopePriorConfig (units in field names).\n"
    )
    path.write_text(header + OmegaConf.to_yaml(cfg))
    return path
