"""Hydra entry point: `python -m stemjax.train +experiment=wse2te [trainer=smoke]`.

Composes `conf/train.yaml` (schema `stemjax.training.TrainConfig`), trains in Hydra's run
directory (metrics.csv, checkpoints/, figures/, .hydra/) and returns the final validation F1 so
that a sweeper can optimise it. Multirun: `python -m stemjax.train -m +experiment=wse2te
trainer=smoke model.width=8,16`.
"""

import logging
import os

# XLA/JAX environment before JAX initialises (the user's own settings win)
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from stemjax.config import config_dir  # noqa: E402
from stemjax.training import register_train_configs, train  # noqa: E402

register_train_configs()  # before hydra.main composes


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every file it writes
    output_dir = HydraConfig.get().runtime.output_dir
    return train(cfg, output_dir)


if __name__ == "__main__":
    main()
