"""Training curve of the shipped model: loss and validation metrics from its metrics.csv.

    python experiments/wse2te/plot_training.py [METRICS_CSV]
    python experiments/wse2te/plot_training.py experiments/wse2te/training_metrics.csv \
        --append experiments/wse2te/runs/cpu_ft/metrics.csv --offset 4750

A run started from a trained model (`trainer.init_from`) counts its steps from 0: `--append`
adds its rows to the curve, shifted by `--offset` (the source model's step).

Dotted lines mark where the run was resumed with a wider microscope prior (`FINE_TUNES`): its
validation images are drawn from that prior from then on, so validation scores on either side
are not comparable. From step 2750 the targets also label partly visible edge defects, and the
validation precision at threshold 0.5 drops to ≈ 0.7. It stays there in the third fine-tune
(3750–4750), whose validation scores partly visible defects as neutral, so the drop is not the
scoring: at 0.5, over the whole image of the wide prior's images, the network makes low-score
false detections that the shipped threshold and predict's edge band remove (REPORT.md).
"""

import argparse
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

HERE = Path(__file__).parent
FINE_TUNES = (
    (1750, "Δf ±20 Å, σ ±0.13 Å"),
    (2750, "Δf ±30 Å, σ ±0.17 Å, edge labels"),
    (3750, "C23 ±100 nm"),
    (4750, "init_from, new data seed, same prior"),
    (6750, "init_from, new data seed, same prior"),
)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("metrics", nargs="?", default=str(HERE / "runs" / "cpu_c23" / "metrics.csv"))
    p.add_argument("--append", default=None, help="metrics.csv of a warm-started run")
    p.add_argument("--offset", type=int, default=0, help="step of the model it started from")
    args = p.parse_args(argv)
    m = pd.read_csv(args.metrics)
    if args.append:
        extra = pd.read_csv(args.append)
        extra["step"] += args.offset
        m = pd.concat([m[m["step"] <= args.offset], extra], ignore_index=True)
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
    b.set_ylim(0.6, 1.005)
    b.set_title("validation, all defects (0.8 Å matching, threshold 0.5)")
    for step, label in FINE_TUNES:
        for ax in (a, b):
            ax.axvline(step, color="0.5", ls=":", lw=1)
        a.text(step, a.get_ylim()[1], f" {label} →", va="top", fontsize=7, rotation=90)
    a.legend(frameon=False, loc="lower left")
    b.legend(frameon=False, loc="lower left")
    fig.tight_layout()
    fig.savefig(HERE / "training_curve.png", dpi=110)


if __name__ == "__main__":
    main()
