"""Training curve of the shipped model: loss and validation metrics from its metrics.csv.

    python experiments/wse2te/plot_training.py [METRICS_CSV] [FINE_TUNE_STEP]

FINE_TUNE_STEP marks where the run was resumed with a wider microscope prior (its validation
images are drawn from that prior from then on, so validation scores before and after it are not
comparable).
"""

import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

HERE = Path(__file__).parent


def main(path=HERE / "runs" / "cpu_wide" / "metrics.csv", fine_tune_step=1750):
    fine_tune_step = float(fine_tune_step)  # also from the command line; 0: no marker
    m = pd.read_csv(path)
    m.to_csv(HERE / "training_metrics.csv", index=False)
    fig = Figure(figsize=(10, 3.6))
    a, b = fig.subplots(1, 2)
    a.semilogy(m["step"], m["loss"], lw=0.8, label="training loss (weighted CE)")
    v = m.dropna(subset=["val_loss"])
    a.semilogy(v["step"], v["val_loss"], "o-", label="validation loss")
    a.set_xlabel("step")
    for key in ("val_recall", "val_precision", "val_f1"):
        b.plot(v["step"], v[key], "o-", label=key[4:])
    b.set_xlabel("step")
    b.set_ylim(0.8, 1.001)
    b.set_title("validation, all defects (0.8 Å matching, threshold 0.5)")
    if fine_tune_step:
        for ax in (a, b):
            ax.axvline(fine_tune_step, color="0.5", ls=":", lw=1)
        a.text(fine_tune_step, a.get_ylim()[1], " wider Δf, σ prior →", va="top", fontsize=8)
    a.legend(frameon=False, loc="upper right", bbox_to_anchor=(1.0, 0.92))
    b.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(HERE / "training_curve.png", dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
