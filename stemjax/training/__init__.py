"""Training layer: the jitted train loop (`train`), its Hydra schemas and orbax checkpoints."""

from stemjax.training.checkpoint import Checkpointer
from stemjax.training.trainer import (
    TRAIN_CONFIG_NAME,
    NonFiniteError,
    TrainConfig,
    TrainerConfig,
    load_train_config,
    make_optimizer,
    make_schedule,
    register_train_configs,
    train,
)

__all__ = [
    "TRAIN_CONFIG_NAME",
    "Checkpointer",
    "NonFiniteError",
    "TrainConfig",
    "TrainerConfig",
    "load_train_config",
    "make_optimizer",
    "make_schedule",
    "register_train_configs",
    "train",
]
