"""Table of a Hydra multirun sweep of `stemjax.train`: one row per job, labelled by the overrides
that differ between jobs, with the last validation of its metrics.csv (recall, precision, F1,
macro F1, RMSE; threshold 0.5, class-correct) and its throughput.

    python -m stemjax.train -m +experiment=wse2te trainer=cpu trainer.steps=400 \
        trainer.eval_every=400 loss=ce,focal model.width=8,16 \
        hydra.sweep.dir=experiments/wse2te/runs/sweep_cpu
    python experiments/wse2te/sweep_table.py experiments/wse2te/runs/sweep_cpu \
        --out experiments/wse2te/sweep_cpu.md

`--evaluations DIR` adds a table of held-out scores per job and decoding threshold from
`evaluate.py --json` files (the jobs' models exported with `stemjax.predict.export_model`).

Jobs without a validation row yet are listed with blanks (still running, or crashed).
"""

from __future__ import annotations

import argparse
import json
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
"""metrics.csv column → table header."""
PLACEMENT = ("hydra.", "trainer.progress")
"""Overrides that only place or display a job: left out of the table."""


def sweep_rows(sweep_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """One row per job folder (with .hydra/overrides.yaml) under `sweep_dir`, and the overrides
    that every job shares (left out of the rows' labels)."""
    jobs = sorted(
        (p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")),
        key=lambda job: (len(job.name), job.name),
    )
    if not jobs:
        raise SystemExit(f"{sweep_dir}: no job folders with .hydra/overrides.yaml")
    overrides = {}
    for job in jobs:
        listed = OmegaConf.to_container(OmegaConf.load(job / ".hydra" / "overrides.yaml"))
        overrides[job] = [o for o in listed if not o.startswith(PLACEMENT)]
    common = [o for o in overrides[jobs[0]] if all(o in v for v in overrides.values())]
    rows = []
    for job in jobs:
        row = {"job": job.name, "overrides": " ".join(o for o in overrides[job] if o not in common)}
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
    return pd.DataFrame(rows), common


def evaluation_rows(table: pd.DataFrame, evaluations: Path, prefix: str) -> pd.DataFrame:
    """One row per (job, threshold) from `evaluate.py --json` files named
    `<prefix><job>_t<threshold>.json` in `evaluations`: interior recall, precision, F1, macro
    F1 and the lowest class recall (class-correct matching)."""
    rows = []
    for _, job in table.iterrows():
        for path in sorted(evaluations.glob(f"{prefix}{job['job']}_t*.json")):
            r = json.loads(path.read_text())
            res = r["interior"]["result"]
            worst = min(res["per_class"], key=lambda c: c["recall"])
            rows.append({"job": job["job"], "overrides": job["overrides"],
                         "threshold": r["threshold"], "defects": res["n_ground_truth"],
                         "recall": res["recall"], "precision": res["precision"],
                         "F1": res["f1"], "macro F1": res["macro_f1"],
                         "lowest class recall":
                             f"{worst['recall']:.3f} ({worst['name']})"})  # fmt: skip
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame) -> str:
    """Markdown table: step counts as integers, throughput and RMSE with 1 decimal, scores with
    3, blanks for missing values."""

    def cell(col, v):
        if pd.isna(v):
            return ""
        if col in ("steps", "val step", "defects"):
            return f"{v:.0f}"
        if isinstance(v, float):
            if col == "threshold":
                return f"{v:g}"
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
    p.add_argument("--evaluations", type=Path, default=None,
                   help="folder of evaluate.py JSONs of the jobs' models: adds a second table")
    p.add_argument("--prefix", default="", help="their file names: <prefix><job>_t<thr>.json")
    args = p.parse_args(argv)
    table, common = sweep_rows(args.sweep_dir)
    text = f"Every job: `{' '.join(common)}`\n\n{markdown(table)}"
    if args.evaluations:
        evaluated = evaluation_rows(table, args.evaluations, args.prefix)
        text += ("\n\nHeld-out (`evaluate.py`, interior, at the thresholds given):\n\n"
                 + markdown(evaluated))  # fmt: skip
    print(text)
    if args.out:
        args.out.write_text(f"Sweep `{args.sweep_dir}`. {text}\n")


if __name__ == "__main__":
    main()
