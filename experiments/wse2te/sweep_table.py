"""Table of a Hydra multirun sweep of `stemjax.train`: one row per job, its overrides and the
last validation of its metrics.csv (recall, precision, F1, macro F1, RMSE, throughput).

    python -m stemjax.train -m +experiment=wse2te trainer=cpu trainer.steps=400 \
        trainer.eval_every=400 loss=ce,focal model.width=8,16 \
        hydra.sweep.dir=experiments/wse2te/runs/sweep_cpu
    python experiments/wse2te/sweep_table.py experiments/wse2te/runs/sweep_cpu \
        --out experiments/wse2te/sweep_cpu.md

Jobs without a validation row yet are listed with blanks (still running, or crashed).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

COLUMNS = {
    "val_recall": "recall",
    "val_precision": "precision",
    "val_f1": "F1",
    "val_macro_f1": "macro F1",
    "val_rmse_pm": "RMSE (pm)",
}
"""metrics.csv column → table header (validation at threshold 0.5, class-correct)."""
COMMON = ("+experiment=", "hydra.", "trainer.progress")
"""Overrides that are the same for every job or only place it: left out of the job label."""


def sweep_rows(sweep_dir: Path) -> pd.DataFrame:
    """One row per job folder (with .hydra/overrides.yaml) under `sweep_dir`."""
    rows = []
    jobs = sorted(p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml"))
    if not jobs:
        raise SystemExit(f"{sweep_dir}: no job folders with .hydra/overrides.yaml")
    for job in jobs:
        overrides = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        row = {
            "job": job.name,
            "overrides": " ".join(o for o in overrides if not o.startswith(COMMON)),
        }
        metrics = job / "metrics.csv"
        if metrics.exists():
            m = pd.read_csv(metrics)
            row["steps"] = int(m["step"].max())
            row["images/s"] = float(m["images_per_s"].tail(10).median())
            val = m.dropna(subset=["val_f1"]) if "val_f1" in m else m.iloc[0:0]
            if len(val):
                last = val.iloc[-1]
                row["val step"] = int(last["step"])
                row.update({head: float(last[col]) for col, head in COLUMNS.items() if col in last})
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """Markdown table; floats with 3 decimals (1 for throughput), blanks for missing values."""

    def cell(col, v):
        if pd.isna(v):
            return ""
        if isinstance(v, float):
            return f"{v:.1f}" if col in ("images/s", "RMSE (pm)") else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(cell(c, row[c]) for c in table.columns) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_dir", type=Path)
    p.add_argument("--out", type=Path, default=None, help="also write the table (Markdown)")
    args = p.parse_args(argv)
    table = sweep_rows(args.sweep_dir)
    text = markdown(table)
    print(text)
    if args.out:
        args.out.write_text(f"Sweep `{args.sweep_dir}`\n\n{text}\n")


if __name__ == "__main__":
    main()
