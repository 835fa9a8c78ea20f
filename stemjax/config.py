"""Hydra configuration: the typed top-level schema, its ConfigStore entry and the conf/ root.

Every group (`specimen/`, `microscope/`, `corruption/`, `data/`) is validated against its
dataclass schema when Hydra composes, so an unknown key or a wrong type stops at start with a
message naming it. `load_config(overrides)` composes without a Hydra app (tests, notebooks);
`to_runtime(cfg)` converts a composed DictConfig once into the objects jitted code uses.
"""

from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from stemjax.corrupt import CorruptionConfig
from stemjax.microscope_prior import MicroscopePriorConfig
from stemjax.specimen import SpecimenConfig, conf_dir
from stemjax.trainingdata.pipeline import DataConfig


@dataclass
class Config:
    """Top-level run configuration."""

    specimen: SpecimenConfig = MISSING
    microscope: MicroscopePriorConfig = MISSING
    corruption: CorruptionConfig = field(default_factory=CorruptionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0


def register_configs() -> None:
    """Register the schemas in Hydra's ConfigStore (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="base_config", node=Config)


def config_dir() -> Path:
    """The conf/ root (the repository's, or the one installed inside the package)."""
    return conf_dir()


def load_config(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """Compose `conf/config.yaml` with Hydra overrides (e.g. ["specimen=mos2se"])."""
    register_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def to_runtime(cfg: DictConfig):
    """(SpecimenConfig, MicroscopePrior, CorruptionConfig, DataConfig) from a composed config."""
    from stemjax.microscope_prior import MicroscopePrior
    from stemjax.specimen import to_specimen_config

    obj = OmegaConf.to_object(cfg)
    specimen = to_specimen_config(cfg.specimen)
    prior = MicroscopePrior.from_config(obj.microscope)
    return specimen, prior, obj.corruption, obj.data
