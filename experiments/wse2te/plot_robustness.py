"""Robustness figure: recall and precision vs dose, defocus, source size and the probe's rms
aberration phase, from the JSON files `evaluate.py --json` writes (one line pair per file,
labelled). A stress test of one quantity (`--microscope-stress defocus`) is drawn in that
quantity's panel (`STRESSED`), and an aberration or Δf stress also in the phase panel (every
aberration, Δf included, sets it).

    python experiments/wse2te/plot_robustness.py \
        "realistic prior=experiments/wse2te/eval_eval_prior.json" \
        "Δf stress=experiments/wse2te/eval_stress_defocus.json" \
        "σ stress=experiments/wse2te/eval_stress_source_size.json" \
        "aberration stress=experiments/wse2te/eval_stress_aberrations.json"
"""

import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

HERE = Path(__file__).parent
PANELS = {
    "dose": "dose (e⁻/px)",
    "defocus": "defocus Δf (Å)",
    "source_size": "source size σ (Å)",
    "c23": "three-fold astigmatism |C23| (Å)",
    "phase_rms": "probe phase rms (rad), piston and tilt removed",
}
STRESSED = {
    "dose": "dose",
    "defocus": "defocus",
    "source_size": "source_size",
    "c23": "aberrations",
}
"""Panel → the `--microscope-stress` that widens it."""
PHASE_SET_BY = (None, "all", "defocus", "aberrations")
"""The phase panel shows the results whose stress (if any) widens the probe's phase: a dose or
source-size stress would mix their own losses into its bins."""
LOG_X = {"dose"}
"""Panels drawn on a logarithmic axis (the dose stress spans two decades)."""


#: the whole-image scoring drawn dotted, the first a result has (older results: strict only)
WHOLE = {"whole_image_partial_neutral": "whole image, partly visible neutral",
         "whole_image": "whole image"}  # fmt: skip


def plot(results: dict, path, scoring: str = "interior"):
    """One panel per quantity; per labelled result, recall (solid) and precision (dashed) at
    each bin's centre, the bin's range as the horizontal bar (`scoring`: 'interior' or
    'whole_image', see evaluate.py); whole-image precision (`WHOLE`) dotted for comparison."""
    fig = Figure(figsize=(20, 6.0))
    axes = fig.subplots(1, len(PANELS), sharey=True)
    colours = ["C0", "C3", "C2", "C1", "C4"]
    for ax, (name, header) in zip(axes, PANELS.items(), strict=True):
        for c, (label, res) in enumerate(results.items()):
            stress = res.get("microscope_stress") or None
            shown = PHASE_SET_BY if name == "phase_rms" else (None, "all", STRESSED.get(name))
            if f"vs_{name}" not in res[scoring] or stress not in shown:
                continue
            rows = res[scoring][f"vs_{name}"]
            lo, hi = (np.array([r[k] for r in rows], float) for k in ("lo", "hi"))
            mid = np.sqrt(lo * hi) if name in LOG_X else (lo + hi) / 2
            xerr = np.array([[m - r["lo"], r["hi"] - m] for m, r in zip(mid, rows, strict=True)])
            for key, marker, ls in (("recall", "o", "-"), ("precision", "s", "--")):
                y = [np.nan if r[key] is None else r[key] for r in rows]
                ax.errorbar(mid, y, xerr=xerr.T, marker=marker, ls=ls, color=colours[c % 5],
                            capsize=2, ms=4, label=f"{key}, {label}")  # fmt: skip
            whole_key = next(k for k in WHOLE if k in res)
            whole = [r["precision"] for r in res[whole_key][f"vs_{name}"]]
            ax.plot(mid, whole, ls=":", marker=".", color=colours[c % 5], lw=1,
                    label=f"precision ({WHOLE[whole_key]}), {label}")  # fmt: skip
        ax.axhline(0.99, color="grey", lw=0.8, ls=":")
        if name in LOG_X:
            ax.set_xscale("log")
        ax.set_xlabel(header)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score (class-correct, 0.8 Å matching)")
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=4, fontsize=7,
               frameon=False)  # fmt: skip
    thresholds = sorted({str(r.get("threshold")) for r in results.values()})
    fig.suptitle(
        "shipped wse2te model: recall and precision vs the per-image draw (quantile bins; "
        f"interior scoring, edge 0.6 Å; threshold {' / '.join(thresholds)})"
    )
    fig.tight_layout(rect=(0, 0.2, 1, 1))
    fig.savefig(path, dpi=120)


def main(args):
    results = {}
    for a in args:
        label, _, file = a.rpartition("=")
        results[label or Path(file).stem] = json.loads(Path(file).read_text())
    plot(results, HERE / "robustness.png")


if __name__ == "__main__":
    main(sys.argv[1:])
