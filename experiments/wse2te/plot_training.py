"""Training curve of the shipped model: loss and validation metrics from its metrics.csv.

    python experiments/wse2te/plot_training.py [experiments/wse2te/runs/cpu/metrics.csv]
"""

import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

HERE = Path(__file__).parent


def main(path=HERE / "runs" / "cpu" / "metrics.csv"):
    m = pd.read_csv(path)
    m.to_csv(HERE / "training_metrics.csv", index=False)
    fig = Figure(figsize=(10, 3.6))
    a, b = fig.subplots(1, 2)
    a.semilogy(m["step"], m["loss"], lw=0.8, label="training loss (weighted CE)")
    v = m.dropna(subset=["val_loss"])
    a.semilogy(v["step"], v["val_loss"], "o-", label="validation loss (eval prior)")
    a.set_xlabel("step")
    a.legend(frameon=False)
    for key in ("val_recall", "val_precision", "val_f1"):
        b.plot(v["step"], v[key], "o-", label=key[4:])
    b.set_xlabel("step")
    b.set_ylim(0.8, 1.001)
    b.set_title("validation, all defects (0.8 Å matching)")
    b.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(HERE / "training_curve.png", dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:])
