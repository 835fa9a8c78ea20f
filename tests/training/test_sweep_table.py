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


def test_evaluations_table_reads_each_jobs_thresholds(tmp_path):
    import json

    fake_job(tmp_path, "0", ["loss=ce"], 0.8)
    fake_job(tmp_path, "1", ["loss=focal"], 0.9)
    evals = tmp_path / "evals"
    evals.mkdir()

    def write(job, threshold, recall, worst):
        per_class = [{"name": "SV", "recall": 1.0}, {"name": "VW", "recall": worst}]
        result = dict(n_ground_truth=100, recall=recall, precision=0.95, f1=0.96,
                      macro_f1=0.9, per_class=per_class)  # fmt: skip
        out = evals / f"s_{job}_t{threshold}.json"
        out.write_text(json.dumps({"threshold": threshold, "interior": {"result": result}}))

    write("0", 0.5, 0.99, 0.97)
    write("0", 0.9, 0.98, 0.93)
    write("1", 0.9, 0.97, 0.91)
    module = load_script()
    table, _ = module.sweep_rows(tmp_path)
    rows = module.evaluation_rows(table, evals, "s_")
    assert list(zip(rows["job"], rows["threshold"], strict=True)) == [
        ("0", 0.5), ("0", 0.9), ("1", 0.9)
    ]  # fmt: skip
    assert list(rows["overrides"]) == ["loss=ce", "loss=ce", "loss=focal"]
    assert list(rows["lowest class recall"]) == ["0.970 (VW)", "0.930 (VW)", "0.910 (VW)"]
    assert "| 1 | loss=focal | 0.9 | 100 | 0.970 | 0.950 |" in module.markdown(rows)
