"""Prediction: trained model + micrographs → defect table, lattice sites, concentrations.

`load_model(run_dir)` → `TrainedModel`; `predict(model, files or arrays)` → `Prediction`
(defects / sites / fields DataFrames, `.concentrations()`, `.class_averages()`); tiled inference
in `stemjax.predict.inference`; command line `python -m stemjax.predict`.
"""

from stemjax.predict.api import DEFECT_COLUMNS, EDGE_A, SITE_COLUMNS, Prediction, predict
from stemjax.predict.inference import predict_tiles
from stemjax.predict.model import ModelLoadError, TrainedModel, export_model, load_model
from stemjax.predict.sites import assign_sublattices, find_columns

__all__ = [
    "DEFECT_COLUMNS",
    "EDGE_A",
    "SITE_COLUMNS",
    "ModelLoadError",
    "Prediction",
    "TrainedModel",
    "assign_sublattices",
    "export_model",
    "find_columns",
    "load_model",
    "predict",
    "predict_tiles",
]
