"""Calibrate a real ADF-STEM micrograph: several regions of one image, fitted independently.

The micrograph: monolayer MoS2 implanted with Se, 60 kV, 1024² px at a nominal 0.127 Å/px,
DigiScan sample time 32.4 µs per pixel (its "Number Summing Frames" is 5 but "Sum Frames" is
0, so one frame is assumed; DigitalMicrograph .dm3, acquired 2016-07-03), shipped as example
data in the temul-toolkit wheel on PyPI (GPL-3.0, E. O'Connell et al.; not copied into this
repository: `--path` or the wheel is fetched with pip). Convergence and detector angles are
not in the file; the fit takes them from `conf/microscope/mos2_60kv` (30 mrad, 75–210 mrad).

There is no ground truth for a real image, so the check is internal: the regions see the same
probe and the same scan, so their fitted microscope values should agree within the
uncertainties each fit reports (from the curvature of its likelihood). The script prints each
region's values ± 1σ, the spread across regions against the median reported σ, and writes a
JSON, the figure of one region (observed / fitted / residual) and a `conf/microscope/` prior
from the middle region.

    python experiments/mos2_real/fit_regions.py [--path example_Se_implanted_MoS2.dm3]
"""

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import numpy as np

from stemjax.calibrate import calibrate, column_responses, estimate_lattice
from stemjax.calibrate.export import write_microscope_config
from stemjax.io import read_micrograph
from stemjax.microscope_prior import load_microscope_prior, mean_microscope
from stemjax.specimen import load_specimen_config

HERE = Path(__file__).resolve().parent
WHEEL = "temul-toolkit==0.1.9"
MEMBER = "temul/example_data/experimental/example_Se_implanted_MoS2.dm3"
SPECIMEN, MICROSCOPE = "mos2se", "mos2_60kv"
DWELL_US = 32.4
"""DigiScan 'Sample Time' of the file (µs per pixel): turns the fitted dose into a current."""
REGIONS = ((400, 400), (100, 100), (100, 700), (760, 200), (760, 760))
"""Top-left corners (row, col) of the regions: four corners and the middle of the field, away
from the hole near (690, 540)."""
COMPARED = ("pixel_size_angstrom", "rotation_deg", "stretch", "shear", "defocus_angstrom",
            "C12", "phi12_deg", "C21", "phi21_deg", "source_size_angstrom",
            "dose_electrons_per_px")  # fmt: skip


def fetch(workdir: Path) -> Path:
    """The .dm3 out of the temul-toolkit wheel (pip download, no install)."""
    out = workdir / Path(MEMBER).name
    if out.exists():
        return out
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", WHEEL, "-d", str(workdir)]
    subprocess.run(cmd, check=True)
    wheel = next(workdir.glob("temul_toolkit-*.whl"))
    with zipfile.ZipFile(wheel) as z, open(out, "wb") as f:
        f.write(z.read(MEMBER))
    return out


def summary(sol: dict) -> dict:
    """One solution's values and 1σ in the compared quantities (angles in degrees). `sol`: a
    `Calibration`'s values/sigma/derived/derived_sigma, or its `alternative` (same keys)."""
    v, s = dict(sol["values"]), dict(sol["sigma"])
    v.update(sol["derived"])
    s.update(sol["derived_sigma"])
    v["rotation_deg"] = math.degrees(v["rotation_rad"]) % 60.0  # modulo the lattice's 60°
    s["rotation_deg"] = math.degrees(s["rotation_rad"])
    v["phi12_deg"], s["phi12_deg"] = math.degrees(v["phi12"]) % 180.0, math.degrees(s["phi12"])
    v["phi21_deg"], s["phi21_deg"] = math.degrees(v["phi21"]) % 360.0, math.degrees(s["phi21"])
    return {k: (float(v[k]), float(s[k])) for k in COMPARED}


def solutions(cal) -> tuple[dict, dict | None]:
    """(best, mirrored alternative or None) as `summary` dicts."""
    best = summary(dict(values=cal.values, sigma=cal.sigma, derived=cal.derived,
                        derived_sigma=cal.derived_sigma))  # fmt: skip
    alt = summary(cal.alternative) if cal.defocus_sign_ambiguous and cal.alternative else None
    return best, alt


def spread_table(rows: list[dict], key: str) -> tuple[str, dict]:
    """Markdown table of every region's `key` solution ± 1σ, the mean, the spread (std) across
    regions and the median reported σ; and the spread numbers."""
    head = ("| quantity | " + " | ".join(f"region {r['region']}" for r in rows)
            + " | mean | spread (std) | median σ | spread / σ |")  # fmt: skip
    lines, spread = [head, "|---|" + "---|" * (len(rows) + 4)], {}
    for k in COMPARED:
        vals = np.array([r[key][k][0] for r in rows])
        sig = np.array([r[key][k][1] for r in rows])
        std = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
        spread[k] = dict(mean=float(vals.mean()), std=std, median_sigma=float(np.median(sig)))
        cells = " | ".join(f"{v:.4g} ± {s:.2g}" for v, s in zip(vals, sig, strict=True))
        lines.append(f"| {k} | {cells} | {vals.mean():.4g} | {std:.3g} | {np.median(sig):.3g} | "
                     f"{std / np.median(sig):.1f} |")  # fmt: skip
    return "\n".join(lines), spread


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--path", default=None, help="the .dm3 (default: fetched from the wheel)")
    p.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "stemjax_mos2_real"))
    p.add_argument("--size", type=int, default=128, help="region side (px)")
    p.add_argument("--regions", type=int, default=len(REGIONS), help="the first N regions")
    p.add_argument("--json", default=str(HERE / "fit_regions.json"))
    p.add_argument("--figure", default=str(HERE / "fit_region_0.png"))
    p.add_argument(
        "--config",
        default=str(HERE / "microscope" / "mos2_60kv_calibrated.yaml"),
        help="microscope prior written from region 0 (the middle of the field); kept if it exists",
    )
    args = p.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = Path(args.path) if args.path else fetch(workdir)
    mg = read_micrograph(path)
    image = np.asarray(mg.image, np.float64)
    specimen = load_specimen_config(SPECIMEN)
    microscope = mean_microscope(load_microscope_prior(MICROSCOPE))
    # one set of column responses for every region, at the whole field's Bragg pixel size
    field = estimate_lattice(image, mg.pixel_size_A, float(specimen.a))
    t0 = time.perf_counter()
    responses, _ = column_responses(specimen, microscope, field["pixel_size_angstrom"])
    t_responses = time.perf_counter() - t0
    print(
        f"{path.name}: {image.shape} px, nominal {mg.pixel_size_A:.5f} Å/px; Bragg spots of "
        f"the whole field: {field}; column responses {t_responses:.0f} s",
        flush=True,
    )

    rows, fits = [], []
    for i, (r, c) in enumerate(REGIONS[: args.regions]):
        region = image[r : r + args.size, c : c + args.size]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            cal = calibrate(region, mg.pixel_size_A, specimen=specimen, microscope=microscope,
                            responses=responses, strict=False)  # fmt: skip
        problems = [str(w.message) for w in caught if "calibration" in str(w.message)]
        row = dict(region=i, corner_rc=[r, c], seconds=cal.seconds,
                   reduced_chi2=cal.reduced_chi2, newton_decrement=cal.newton_decrement,
                   outlier_columns=len(cal.outlier_sites),
                   defocus_sign_ambiguous=bool(cal.defocus_sign_ambiguous),
                   registration_delta_nll=cal.registration_delta_nll, problems=problems,
                   values=None, alternative=None)  # fmt: skip
        row["values"], row["alternative"] = solutions(cal)
        rows.append(row)
        fits.append(cal)
        status = "converged" if not problems else "; ".join(problems)
        print(f"region {i} at {r, c}: χ²/px {cal.reduced_chi2:.3f}, {cal.seconds:.0f} s, "
              f"{len(cal.outlier_sites)} outlier columns; {status}", flush=True)  # fmt: skip

    # The defocus sign of one ADF image of a thin specimen is ambiguous: (Δf, C12) and the
    # mirrored (−Δf, −C12) fit within FitOptions.ambiguity_nll. The regions share one probe, so
    # the consistent comparison takes, in every region, the solution on the side of focus that
    # most regions' best solutions are on.
    positive = sum(r["values"]["defocus_angstrom"][0] > 0 for r in rows)
    sign = 1.0 if 2 * positive >= len(rows) else -1.0
    for row in rows:
        alt = row["alternative"]
        flip = alt is not None and np.sign(row["values"]["defocus_angstrom"][0]) != sign
        row["consistent"] = alt if flip else row["values"]
        row["consistent_is_alternative"] = bool(flip)
    table, spread = spread_table(rows, "values")
    print("\nBest solution of each region:\n\n" + table)
    table, spread_consistent = spread_table(rows, "consistent")
    print(f"\nThe solution with Δf {'>' if sign > 0 else '<'} 0 in every region (the mirrored one "
          f"in regions {[r['region'] for r in rows if r['consistent_is_alternative']]}):\n\n"
          + table)  # fmt: skip

    best = 0  # the middle of the field
    fits[0].plot().savefig(args.figure, dpi=110)
    config = Path(args.config)
    if not config.exists():
        write_microscope_config(fits[best], config, base=MICROSCOPE, name=config.stem,
                                dwell_time_us=DWELL_US)  # fmt: skip
    result = dict(file=path.name, source=f"PyPI {WHEEL}: {MEMBER}", shape=list(image.shape),
                  nominal_pixel_size_angstrom=mg.pixel_size_A, specimen=SPECIMEN,
                  microscope=MICROSCOPE, region_px=args.size, field_bragg=field,
                  responses_seconds=t_responses, regions=rows, spread=spread,
                  spread_consistent=spread_consistent, defocus_sign=sign,
                  config_from_region=best)  # fmt: skip
    Path(args.json).write_text(json.dumps(result, indent=1, default=float))
    print(f"\nwrote {args.json}, {args.figure}, {config}")


if __name__ == "__main__":
    main()
