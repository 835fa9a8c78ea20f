"""experiments/wse2te/sweep_table.py: one row per multirun job, labelled by the overrides that
differ, with the job's last validation; unfinished jobs get blanks."""

import importlib.util
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "wse2te" / "sweep_table.py"


def load_script():
    spec = importlib.util.spec_from_file_location("sweep_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_job(root: Path, name: str, overrides: list[str], val_f1: float | None):
    job = root / name
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    rows = [{"step": 25, "images_per_s": 9.0, "val_f1": None, "val_recall": None}]
    if val_f1 is not None:
        rows.append({"step": 50, "images_per_s": 11.0, "val_f1": val_f1, "val_recall": 0.9})
    pd.DataFrame(rows).to_csv(job / "metrics.csv", index=False)


def test_rows_are_labelled_by_the_differing_overrides(tmp_path):
    common = ["+experiment=wse2te", "trainer=cpu", "hydra.run.dir=x"]
    fake_job(tmp_path, "0", [*common, "loss=ce", "model.width=8"], 0.8)
    fake_job(tmp_path, "1", [*common, "loss=focal", "model.width=8"], 0.9)
    fake_job(tmp_path, "10", [*common, "loss=ce", "model.width=16"], None)
    table, shared = load_script().sweep_rows(tmp_path)
    assert shared == ["+experiment=wse2te", "trainer=cpu"]  # hydra.* placement is dropped
    assert list(table["job"]) == ["0", "1", "10"]  # numeric order, not "0", "10", "1"
    assert list(table["overrides"]) == [
        "loss=ce model.width=8",
        "loss=focal model.width=8",
        "loss=ce model.width=16",
    ]
    assert list(table["F1"].iloc[:2]) == [0.8, 0.9] and pd.isna(table["F1"].iloc[2])
    assert table["val step"].iloc[0] == 50 and table["steps"].iloc[2] == 25
    text = load_script().markdown(table)
    assert "| 0 | loss=ce model.width=8 | 50 | 10.0 | 50 | 0.900 |" in text
