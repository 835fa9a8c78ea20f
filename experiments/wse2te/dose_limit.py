"""The dose needed to tell a defect column from its neighbour class at all: an ideal observer.

For two noise-free ADF images I_a, I_b (fraction of incident intensity per pixel, one column
changed) of the same cell, Poisson counting at D incident e⁻/px plus Gaussian read-out noise
of σ_r e⁻ per pixel gives the (Gaussian-approximation) likelihood-ratio detectability, with the
position and background known and no drift (an upper bound for any detector)

    d'(D)² = Σ_px (D·(I_a − I_b))² / (D·Ī + σ_r²),    Ī = (I_a + I_b) / 2.

With equal priors the Bayes error of telling the two apart is Φ(−d'/2). A network that reads
the same column from a drifted, jittered, 5 %-current-varying, contaminated image can only do
worse. σ_r defaults to the largest read-out noise the corruption prior draws
(`detector_noise_rms_max_e`, 3 e⁻); --read-noise-e 0 gives the counting limit alone. This
separates "contrast too low at that dose" from "prior too thin" in the dose stress test
(REPORT, Robustness).

    python experiments/wse2te/dose_limit.py [--json experiments/wse2te/dose_limit.json]

Every setting comes from the configs the training data is drawn from (`conf/config.yaml`:
specimen, microscope and corruption wse2te/default): the microscope prior's mean
(`mean_microscope`: 80 kV, 25.2 mrad, ADF 63–200 mrad, Δf 0, the residual aberrations' mean,
σ 0.4247 Å), its pixel size as the scan step, 4 frozen phonons; an orthogonal 4 × 3 cell of
the specimen (13.2 × 17.1 Å for WSe2).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import ase
import numpy as np
from ase.build import make_supercell

from stemjax.config import load_config, to_runtime
from stemjax.microscope_prior import ELECTRONS_PER_PA_US, mean_microscope
from stemjax.simulate import simulate_adf
from stemjax.specimen import unit_cell

#: (name, changed class, reference class): the confusions the dose stress test shows
PAIRS = [
    ("SeTe vs 2Se", "SeTe", "pristine"),
    ("2Te vs SeTe", "2Te", "SeTe"),
    ("SV vs 2Se", "SV", "pristine"),
    ("DV vs SV", "DV", "SV"),
    ("SeW vs W", "SeW", "pristine"),
    ("VW vs W", "VW", "pristine"),
    ("2TeW vs SeW", "2TeW", "SeW"),
]
DOSES_E_PER_PX = (100.0, 300.0, 1000.0)
"""Incident e⁻/px at which d' is tabulated, besides the realistic prior's mean dose."""


def configs():
    """(SpecimenConfig, MicroscopePrior, CorruptionConfig) of `conf/config.yaml`'s defaults."""
    specimen, prior, corruption, _ = to_runtime(load_config())
    return specimen, prior, corruption


def cell(variant: str, cfg) -> ase.Atoms:
    """Orthogonal 4 × 3 cell of the specimen config `cfg` with the site nearest the centre of
    the defect's sublattice given that class's content (the same source the training data
    uses); 'pristine' changes nothing."""
    atoms = make_supercell(unit_cell(cfg), [[1, 0, 0], [1, 2, 0], [0, 0, 1]]) * (4, 3, 1)
    atoms.wrap()
    if variant != "pristine":
        (defect,) = [d for d in cfg.defects if d.name == variant]
        metal = atoms.numbers == atoms[0].number
        on = metal if defect.sublattice == "metal" else ~metal
        xy = atoms.positions[:, :2]
        centre = np.diag(atoms.cell.array)[:2] / 2
        i = int(np.argmin(np.linalg.norm(xy - centre, axis=1) + np.where(on, 0, 1e9)))
        site = np.flatnonzero(on & (np.linalg.norm(xy - xy[i], axis=1) < 0.1))
        x, y = xy[i]
        del atoms[[int(j) for j in site]]
        for slot in defect.content:
            atoms.append(ase.Atom(slot.element, (x, y, slot.z)))
    atoms.positions[:, 2] += 5.0  # heights ±1.8 Å about the metal plane → inside a 10 Å cell
    atoms.cell[2, 2] = 10.0
    return atoms


def simulate(variant: str, specimen, prior) -> np.ndarray:
    """Noise-free ADF image (fraction of incident intensity per pixel) of `cell(variant)` with
    the microscope prior's mean probe, scanned at its pixel size (Å)."""
    m = mean_microscope(prior)
    if m.aperture_rolloff:
        raise ValueError(f"aperture_rolloff_mrad {m.aperture_rolloff}: simulate_adf has none")
    return simulate_adf(cell(variant, specimen), energy=m.energy,
                        semiangle_cutoff=m.semiangle_cutoff,
                        detector=(m.detector_inner, m.detector_outer), aberrations=m.aberrations,
                        focal_spread=m.focal_spread, source_size=m.source_size,
                        scan_sampling=prior.pixel_size_angstrom, frozen_phonons=4, seed=0,
                        dtype=np.float32)  # fmt: skip


def detectability(a: np.ndarray, b: np.ndarray, dose: float, read_noise_e: float) -> float:
    """d' at `dose` e⁻/px with `read_noise_e` e⁻ rms per pixel (see the module docstring)."""
    signal = dose * (a - b)
    variance = dose * (a + b) / 2 + read_noise_e**2
    return float(np.sqrt(np.sum(signal**2 / variance)))


def dose_for(d_target: float, a: np.ndarray, b: np.ndarray, read_noise_e: float) -> float:
    """The dose (e⁻/px) at which d' reaches `d_target` (d' grows monotonically with dose)."""
    lo, hi = 1e-3, 1e7
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if detectability(a, b, mid, read_noise_e) < d_target else (lo, mid)
    return math.sqrt(lo * hi)


def bayes_error(d_prime: float) -> float:
    """Error of the best two-class decision at equal priors, Φ(−d'/2)."""
    return 0.5 * math.erfc(d_prime / 2 / math.sqrt(2))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--read-noise-e", type=float, default=None,
                   help="σ_r, e⁻ rms per pixel (default: the corruption prior's largest)")
    p.add_argument("--json", type=Path, help="write the table here")
    args = p.parse_args(argv)
    specimen, prior, corruption = configs()
    sr = args.read_noise_e
    if sr is None:
        sr = corruption.noise.detector_noise_rms_max_e
    mean_dose = (prior.probe_current_pa.expected() * prior.dwell_time_us.expected()
                 * ELECTRONS_PER_PA_US)  # fmt: skip
    doses = (*DOSES_E_PER_PX, round(mean_dose))
    variants = sorted({x for _, a, b in PAIRS for x in (a, b)})
    images = {v: simulate(v, specimen, prior) for v in variants}
    print(f"pristine cell: mean ADF signal {images['pristine'].mean():.4f} of the incident "
          f"intensity; read-out noise {sr:g} e⁻ rms per pixel")  # fmt: skip
    head = " | ".join(f"{d:g} e⁻/px" for d in doses)
    print(f"| pair | d' (Bayes error) at: {head} | dose for d' = 4 (e⁻/px) |")
    print("|---|" + "---|" * len(doses) + "---|")
    rows = []
    for name, a, b in PAIRS:
        ia, ib = images[a], images[b]
        ds = [detectability(ia, ib, d, sr) for d in doses]
        d4 = dose_for(4.0, ia, ib, sr)
        cells = " | ".join(f"{x:.1f} ({bayes_error(x):.0e})" for x in ds)
        print(f"| {name} | {cells} | {d4:.0f} |")
        rows.append({"pair": name, "d_prime": dict(zip(map(str, doses), ds, strict=True)),
                     "dose_for_d_prime_4": d4})  # fmt: skip
    if args.json:
        out = {"read_noise_e": sr, "doses_e_per_px": doses, "pairs": rows,
               "mean_signal_fraction": float(images["pristine"].mean())}  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
