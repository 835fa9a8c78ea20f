"""Training layer: the jitted train loop (`train`), its Hydra schemas and orbax checkpoints."""

from stemjax.training.checkpoint import Checkpointer
from stemjax.training.trainer import (
    TRAIN_CONFIG_NAME,
    NonFiniteError,
    TrainConfig,
    TrainerConfig,
    data_mesh,
    init_train_state,
    load_train_config,
    make_optimizer,
    make_schedule,
    make_train_step,
    register_train_configs,
    train,
)

__all__ = [
    "TRAIN_CONFIG_NAME",
    "Checkpointer",
    "NonFiniteError",
    "TrainConfig",
    "TrainerConfig",
    "data_mesh",
    "init_train_state",
    "load_train_config",
    "make_optimizer",
    "make_schedule",
    "make_train_step",
    "register_train_configs",
    "train",
]
