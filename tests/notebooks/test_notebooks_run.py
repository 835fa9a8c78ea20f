"""The user walkthroughs in notebooks/ run end to end as plain scripts (small mode, CPU).

Each notebook is a jupytext percent script; it runs in a subprocess from the repository root
with STEMJAX_NOTEBOOK_SMALL=1 and writes its figures to a temporary folder. Notebook 02 needs
a trained model: the shipped `experiments/wse2te/model` when present, else an untrained tiny
U-Net in a run directory made by `tests/predict/predict_helpers.make_run`.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "predict"))
from predict_helpers import make_run  # noqa: E402

NOTEBOOKS = REPO / "notebooks"
SHIPPED_MODEL = REPO / "experiments" / "wse2te" / "model"
TIMEOUT_S = 600


def run_notebook(name, out, **env_extra):
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "MPLBACKEND": "Agg",
        "STEMJAX_NOTEBOOK_SMALL": "1",
        "STEMJAX_NOTEBOOK_OUT": str(out),
        **env_extra,
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(NOTEBOOKS / name)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    print(f"{name}: {time.perf_counter() - t0:.1f} s, return code {proc.returncode}")
    return proc


def assert_ran(proc, out, files):
    tail = f"\n--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    assert proc.returncode == 0, f"notebook failed{tail}"
    for name in files:
        path = out / name
        assert path.is_file(), f"{name} not written{tail}"
        assert path.stat().st_size > 0, f"{name} is empty"


def test_simulate_notebook_runs(tmp_path):
    proc = run_notebook("01_simulate.py", tmp_path)
    assert_ran(
        proc,
        tmp_path,
        [
            "01_adf_image.png",
            "01_line_profile.png",
            "01_defocus_source_size.png",
            "01_training_data.png",
        ],
    )


def test_analyse_notebook_runs(tmp_path):
    if SHIPPED_MODEL.exists():
        model = SHIPPED_MODEL
    else:
        # Untrained: its defect probability exceeds the default 0.5 almost everywhere, and
        # `predict` then stops at max_detections per tile; a high decoding threshold leaves a
        # few hundred random detections, which the analysis and plots must survive.
        model = make_run(tmp_path / "run", ["trainer.decode_threshold=0.999"])
    out = tmp_path / "out"
    proc = run_notebook("02_analyse_micrograph.py", out, STEMJAX_MODEL=str(model))
    assert_ran(
        proc,
        out,
        [
            "synthetic_wse2te.tif",
            "02_micrograph.png",
            "02_concentrations.png",
            "02_density_maps.png",
            "02_spatial_statistics.png",
            "02_class_averages.png",
            "02_truth_vs_detections.png",
        ],
    )


def test_analyse_notebook_without_model_fails_clearly(tmp_path):
    missing = tmp_path / "no_model_here"
    proc = run_notebook("02_analyse_micrograph.py", tmp_path / "out", STEMJAX_MODEL=str(missing))
    assert proc.returncode != 0
    assert "no trained model at" in proc.stderr and str(missing) in proc.stderr
    assert "STEMJAX_MODEL" in proc.stderr
