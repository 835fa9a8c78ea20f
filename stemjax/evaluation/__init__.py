"""Evaluation: the one logits → defect-list decoding, and the DESIGN.md scoring protocol.

Device: `decode_defects(logits)` → fixed-size `Detections` (jit/vmap; shared by validation and
predict). Host: `detections_to_numpy`, `match_detections` (Hungarian within a radius),
`restrict_to_region` (score a region only), `evaluate` (per-class precision / recall / F1,
confusion matrix, localisation RMSE in pm) and
`format_report`. Positions are (row, col) in px, pixel centres at integer coordinates.
"""

from stemjax.evaluation.decode import (
    Detections,
    decode_defects,
    defect_probabilities,
    detections_to_numpy,
)
from stemjax.evaluation.metrics import (
    ClassMetrics,
    EvaluationResult,
    Matching,
    evaluate,
    format_report,
    match_detections,
    restrict_to_region,
)

__all__ = [
    "ClassMetrics",
    "Detections",
    "EvaluationResult",
    "Matching",
    "decode_defects",
    "defect_probabilities",
    "detections_to_numpy",
    "evaluate",
    "format_report",
    "match_detections",
    "restrict_to_region",
]
