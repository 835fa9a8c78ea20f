"""Model layer: the Flax NNX U-Net giving per-pixel defect logits, and its losses."""

from stemjax.model.losses import (
    LossConfig,
    class_weights_from_frequencies,
    focal_loss,
    heatmap_loss,
    make_loss,
    weighted_cross_entropy,
)
from stemjax.model.unet import (
    ModelConfig,
    UNet,
    create_unet,
    param_count,
    validate_model_config,
)

__all__ = [
    "LossConfig",
    "ModelConfig",
    "UNet",
    "class_weights_from_frequencies",
    "create_unet",
    "focal_loss",
    "heatmap_loss",
    "make_loss",
    "param_count",
    "validate_model_config",
    "weighted_cross_entropy",
]
