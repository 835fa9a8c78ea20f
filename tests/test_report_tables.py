"""The REPORT's table printer (experiments/wse2te/report_tables.py) reads evaluate.py records."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments" / "wse2te"))
import report_tables  # noqa: E402


def _record(bins, recall=1.0):
    result = {
        "class_names": ["none", "A", "B"],
        # rows: spurious, truth A, truth B; columns: missed, predicted A, predicted B
        "confusion": [[0, 0, 2], [1, 5, 1], [0, 0, 7]],
        "per_class": [
            {"name": "A", "support": 7, "predicted": 5, "precision": 1.0, "recall": 5 / 7,
             "f1": 0.833, "rmse_pm": 8.04},
            {"name": "B", "support": 7, "predicted": 10, "precision": 0.7, "recall": 1.0,
             "f1": 0.824, "rmse_pm": None},
        ],  # fmt: skip
        "n_ground_truth": 14, "n_predicted": 15, "recall": recall, "precision": 0.8,
        "f1": 0.83, "rmse_pm": 8.0,
    }  # fmt: skip
    rows = [{"lo": lo, "hi": hi, "gt": 7, "recall": recall, "precision": 0.5} for lo, hi in bins]
    scoring = {"result": result, "vs_defocus": rows}
    return {"interior": scoring, "whole_image_partial_neutral": scoring}


def test_errors_left_reads_the_confusion_matrix():
    r = _record([(0, 1)])["interior"]["result"]
    assert report_tables.errors_left(r) == "2 spurious B, 1 missed A, 1 A called B"
    table = report_tables.class_table(_record([(0, 1)]))
    assert "| B | 7 | 10 | 0.700 | 1.000 | 0.824 | — |" in table
    assert "| A | 7 | 5 | 1.000 | 0.714 | 0.833 | 8.0 |" in table


def test_binned_table_compares_only_the_same_bins():
    here, other = _record([(-60, 0), (0, 60)]), _record([(-60, 0), (0, 60)], recall=0.5)
    table = report_tables.binned_table(here, "defocus", {"old": other})
    assert "| +0.0 – +60.0 | 7 | 1.000 | 0.500 | 0.500 | 0.500 | 0.500 |" in table
    assert table.splitlines()[-1] == "| all | 14 | 1.000 | 0.800 | 0.800 | 0.500 | 0.800 |"
    with pytest.raises(ValueError, match="old: its defocus bins differ"):
        report_tables.binned_table(here, "defocus", {"old": _record([(-50, 0), (0, 60)])})


def test_binned_counts_each_class_per_bin():
    import numpy as np
    from evaluate import binned

    counts = {  # three images, two classes
        "gt": np.array([3, 2, 4]), "tp": np.array([2, 2, 4]), "pred": np.array([2, 3, 4]),
        "class_gt": np.array([[2, 1], [1, 1], [0, 4]]),
        "class_tp": np.array([[1, 1], [1, 1], [0, 4]]),
    }  # fmt: skip
    rows = binned(np.array([10.0, 20.0, 30.0]), counts, n_bins=2, class_names=("A", "B"))
    assert [r["class_recall"] for r in rows] == [{"A": [1, 2], "B": [1, 1]},
                                                 {"A": [1, 1], "B": [5, 5]}]  # fmt: skip
    assert [r["recall"] for r in rows] == [2 / 3, 1.0]
    record = {"interior": {"vs_dose": rows}}
    table = report_tables.class_binned_table(record, "dose")
    assert "| 10 – 20 | 1/2 (0.500) | 1/1 |" in table


def test_a_header_with_a_pipe_stays_one_markdown_cell():
    # |C23| in the header must not split the table's first row into extra columns
    header = report_tables.binned_header("c23")
    assert "\\|C23\\|" in header
    row = f"| {header} | GT |"
    cells = [c for c in row.replace("\\|", "").split("|") if c.strip()]
    assert len(cells) == 2
