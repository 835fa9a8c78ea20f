"""Markdown tables for REPORT.md from the JSON files `evaluate.py --json` writes, so that the
report's numbers are printed from the records instead of copied by hand.

- `classes FILE`: per-class support, detections, precision, recall, F1 and localisation RMSE
  (pm), interior scoring, then the errors left (spurious, missed, confused) from the confusion
  matrix.
- `binned FILE QUANTITY [LABEL=FILE ...]`: recall and precision per bin of QUANTITY (dose,
  defocus, source_size, c23, phase_rms; see `evaluate.BINNED`), interior, with the whole-image
  precision (partly visible defects neutral) beside it; each LABEL=FILE adds that result's
  recall and precision in the same bins (same test images: the bins must coincide);
  `--per-class`: the recall of each true class per bin instead.

    python experiments/wse2te/report_tables.py classes experiments/wse2te/eval_eval_prior.json
    python experiments/wse2te/report_tables.py binned \
        experiments/wse2te/eval_stress_defocus.json defocus \
        "0.95=experiments/wse2te/sweep_eval/t0.95_stress_defocus.json"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluate import BINNED, binned_header


def _f(x, spec=".3f") -> str:
    return "—" if x is None else f"{x:{spec}}"


def class_table(record: dict, scoring: str = "interior") -> str:
    """Per-class table and the errors left, of one `evaluate.py` record."""
    r = record[scoring]["result"]
    lines = [
        "| class | support | predicted | precision | recall | F1 | RMSE (pm) |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in r["per_class"]:
        lines.append(
            f"| {c['name']} | {c['support']} | {c['predicted']} | {_f(c['precision'])} | "
            f"{_f(c['recall'])} | {_f(c['f1'])} | {_f(c['rmse_pm'], '.1f')} |"
        )
    lines.append(
        f"| **all (class-correct)** | **{r['n_ground_truth']}** | **{r['n_predicted']}** | "
        f"**{_f(r['precision'])}** | **{_f(r['recall'])}** | **{_f(r['f1'])}** | "
        f"**{_f(r['rmse_pm'], '.1f')}** |"
    )
    return "\n".join(lines) + "\n\nErrors left: " + errors_left(r) + "."


def errors_left(result: dict) -> str:
    """'2 spurious SeTe, 1 missed SeTe, 1 SV called SeW' from a confusion matrix (rows: truth
    with 'spurious' first; columns: prediction with 'missed' first)."""
    names, conf = result["class_names"], result["confusion"]
    parts = []
    for j, n in enumerate(conf[0][1:], start=1):
        if n:
            parts.append(f"{n} spurious {names[j]}")
    for i, row in enumerate(conf[1:], start=1):
        if row[0]:
            parts.append(f"{row[0]} missed {names[i]}")
        for j, n in enumerate(row[1:], start=1):
            if n and j != i:
                parts.append(f"{n} {names[i]} called {names[j]}")
    return ", ".join(parts) if parts else "none"


def binned_table(record: dict, quantity: str, others: dict[str, dict] | None = None) -> str:
    """Recall and precision per bin of `quantity`, interior, with whole-image precision (partly
    visible defects neutral) and the recall and precision of `others` (label → record)."""
    header, spec = binned_header(quantity), BINNED[quantity][1]
    key = f"vs_{quantity}"
    rows = record["interior"][key]
    neutral = record["whole_image_partial_neutral"][key]
    others = others or {}
    for label, other in others.items():
        lo_hi = [(round(b["lo"], 6), round(b["hi"], 6)) for b in other["interior"][key]]
        if lo_hi != [(round(b["lo"], 6), round(b["hi"], 6)) for b in rows]:
            raise ValueError(f"{label}: its {quantity} bins differ (not the same test images)")
    cols = ["GT", "recall", "precision", "whole-image precision, partly visible neutral"]
    for label in others:
        cols += [f"{label}: recall", "precision"]
    lines = [f"| {header} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for b, (row, whole) in enumerate(zip(rows, neutral, strict=True)):
        cells = [f"{row['lo']:{spec}} – {row['hi']:{spec}}", str(row["gt"]), _f(row["recall"]),
                 _f(row["precision"]), _f(whole["precision"])]  # fmt: skip
        for other in others.values():
            o = other["interior"][key][b]
            cells += [_f(o["recall"]), _f(o["precision"])]
        lines.append("| " + " | ".join(cells) + " |")
    total = record["interior"]["result"]
    cells = ["all", str(total["n_ground_truth"]), _f(total["recall"]), _f(total["precision"]),
             _f(record["whole_image_partial_neutral"]["result"]["precision"])]  # fmt: skip
    for other in others.values():
        cells += [_f(other["interior"]["result"]["recall"]),
                  _f(other["interior"]["result"]["precision"])]  # fmt: skip
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def class_binned_table(record: dict, quantity: str) -> str:
    """Class-correct recall per true class (found / true) per bin of `quantity`, interior
    (records from `evaluate.py` runs that keep `class_recall` per bin)."""
    header, spec = binned_header(quantity), BINNED[quantity][1]
    rows = record["interior"][f"vs_{quantity}"]
    if "class_recall" not in rows[0]:
        raise ValueError("this record has no per-class counts per bin (an older evaluate.py)")
    names = list(rows[0]["class_recall"])
    lines = [f"| {header} | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for row in rows:
        cells = [f"{row['lo']:{spec}} – {row['hi']:{spec}}"]
        for n in names:
            found, true = row["class_recall"][n]
            cells.append(f"{found}/{true}" + (f" ({found / true:.3f})" if found < true else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _load(path) -> dict:
    return json.loads(Path(path).read_text())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="table", required=True)
    c = sub.add_parser("classes", help="per-class table of one record")
    c.add_argument("file")
    b = sub.add_parser("binned", help="recall and precision per bin of one quantity")
    b.add_argument("file")
    b.add_argument("quantity", choices=tuple(BINNED))
    b.add_argument("others", nargs="*", metavar="LABEL=FILE")
    b.add_argument("--per-class", action="store_true",
                   help="recall per true class (found / true) per bin instead")  # fmt: skip
    args = p.parse_args(argv)
    if args.table == "classes":
        print(class_table(_load(args.file)))
    elif args.per_class:
        print(class_binned_table(_load(args.file), args.quantity))
    else:
        others = {}
        for item in args.others:
            label, sep, path = item.partition("=")
            if not sep:
                p.error(f"expected LABEL=FILE, got {item!r}")
            others[label] = _load(path)
        print(binned_table(_load(args.file), args.quantity, others))


if __name__ == "__main__":
    main()
