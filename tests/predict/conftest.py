"""Run directories with (untrained) tiny U-Nets, as `python -m stemjax.train` writes them."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from stemjax.specimen import DefectRegistry, to_specimen_config
from stemjax.training import Checkpointer, init_train_state, load_train_config


def make_run(run, overrides=()):
    cfg = load_train_config(["+experiment=wse2te", "trainer=smoke", "trainer.ema=0.5", *overrides])
    obj = OmegaConf.to_object(cfg)
    registry = DefectRegistry.from_config(to_specimen_config(cfg.specimen))
    mcfg = dataclasses.replace(obj.model, num_classes=registry.num_classes)
    _, _, state, _ = init_train_state(mcfg, obj.trainer)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    with Checkpointer(run / "checkpoints", best_metric="val_f1") as ckpt:
        ckpt.save(4, state, metrics={"val_f1": 0.5})
        ckpt.save(8, state, metrics={"val_f1": 0.25})
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """Without normalisation layers the tiny U-Net is a local operator (receptive field ±30 px)."""
    return make_run(tmp_path_factory.mktemp("run_local"), ["model.norm=none"])
