"""Corruption layer: realistic ADF-STEM micrograph effects on device, labels moved by the warp.

Public surface: `corrupt` (the pipeline), `CorruptionConfig` and its parts (priors; Hydra
schemas), `normalise_image` (shared with `predict`), and the `warp` / `noise` building blocks.
Coordinates: (row, col) in output pixels; see `stemjax.corrupt.warp`.
"""

from stemjax.corrupt import noise, warp
from stemjax.corrupt.config import (
    ContaminationConfig,
    CorruptionConfig,
    NoiseConfig,
    WarpConfig,
    clean_config,
)
from stemjax.corrupt.normalise import normalise_image
from stemjax.corrupt.pipeline import corrupt
from stemjax.corrupt.warp import (
    WarpParams,
    clean_px_to_output_px,
    displacement,
    displacement_field,
    forward_map,
    inverse_map,
    margins,
    warp_image,
)

__all__ = [
    "ContaminationConfig",
    "CorruptionConfig",
    "NoiseConfig",
    "WarpConfig",
    "WarpParams",
    "clean_config",
    "clean_px_to_output_px",
    "corrupt",
    "displacement",
    "displacement_field",
    "forward_map",
    "inverse_map",
    "margins",
    "noise",
    "normalise_image",
    "warp",
    "warp_image",
]
