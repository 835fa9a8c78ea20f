"""Figure of a calibration: observed, fitted and standardised residual, with the fitted values."""

from __future__ import annotations

import math

from matplotlib.figure import Figure


def plot_calibration(cal) -> Figure:
    """Observed / fitted (same grey scale) / residual (±4σ) panels; outlier columns circled;
    the fitted values with 1σ under the panels."""
    fig = Figure(figsize=(12, 5.2))
    axes = fig.subplots(1, 3)
    lo, hi = (float(x) for x in (cal.model.min(), cal.model.max()))
    for ax, data, title in (
        (axes[0], cal.image, "observed"),
        (axes[1], cal.model, "fitted (mean signal)"),
    ):
        ax.imshow(data.T, origin="lower", cmap="gray", vmin=lo, vmax=hi)
        ax.set_title(title)
    im = axes[2].imshow(cal.residual.T, origin="lower", cmap="RdBu_r", vmin=-4, vmax=4)
    axes[2].set_title(f"(observed − fitted)/σ, reduced χ² {cal.reduced_chi2:.3f}")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    if len(cal.outlier_sites):
        axes[2].scatter(*cal.outlier_sites.T, s=60, facecolors="none", edgecolors="k", lw=0.8)
    for ax in axes:
        ax.set_xlabel("axis 0 (px)")
        ax.set_ylabel("axis 1 (px)")
    v, s, d, ds = cal.values, cal.sigma, cal.derived, cal.derived_sigma
    sign = " (sign of Δf, C12 ambiguous)" if cal.defocus_sign_ambiguous else ""
    text = (
        f"pixel {v['pixel_size_angstrom']:.5f} ± {s['pixel_size_angstrom']:.5f} Å   "
        f"rotation {d['rotation_deg']:.3f} ± {ds['rotation_deg']:.3f}°   "
        f"stretch {v['stretch']:+.4f}  shear {v['shear']:+.4f}\n"
        f"Δf {v['defocus_angstrom']:.1f} ± {s['defocus_angstrom']:.1f} Å   "
        f"C12 {d['C12']:.1f} ± {ds['C12']:.1f} Å at {math.degrees(d['phi12']):.0f}°   "
        f"C21 {d['C21']:.0f} ± {ds['C21']:.0f} Å at {math.degrees(d['phi21']):.0f}°   "
        f"source σ {v['source_size_angstrom']:.3f} ± {s['source_size_angstrom']:.3f} Å{sign}\n"
        f"dose {v['dose_electrons_per_px']:.0f} ± {s['dose_electrons_per_px']:.0f} e⁻/px   "
        f"gain {v['gain']:.4g}   offset {v['offset']:.4g}   "
        f"read noise {v['read_noise_electrons']:.2f} e⁻   "
        f"{len(cal.outlier_sites)} outlier columns   fit {cal.seconds:.0f} s"
    )
    fig.text(0.01, 0.01, text, fontsize=8.5, family="monospace", va="bottom")
    fig.subplots_adjust(bottom=0.22, top=0.93, left=0.05, right=0.97, wspace=0.3)
    return fig
