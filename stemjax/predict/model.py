"""Load a trained U-Net for prediction: a run directory (or checkpoint) → `TrainedModel`.

A run directory is what `python -m stemjax.train` writes: `.hydra/config.yaml` (or a plain
`config.yaml`, as in a shipped model) and `checkpoints/<step>/`. The config gives the model
architecture, the defect classes (specimen registry), the training pixel size (Å/px) and the
decoding settings; the checkpoint gives the weights (the EMA weights when the run kept them).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from pathlib import Path

import jax
import numpy as np
from flax import nnx
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

CONFIG_FILES = (".hydra/config.yaml", "config.yaml")
ESTIMATE = "estimate"
"""site_prior / `trainer.decode_prior` value: take the defect rates from a first pass over the
data (`stemjax.predict.predict` resolves it; `Prediction.site_rates`)."""


class ModelLoadError(ValueError):
    """A run directory / checkpoint that cannot be loaded; the message names the path."""


@dataclasses.dataclass(frozen=True, eq=False)
class TrainedModel:
    """A trained U-Net ready for inference.

    registry: the defect classes (ids, names, sublattices). pixel_size_A: training pixel size
    (Å/px); micrographs are resampled to it. image_px: training image size (px).
    sublattice_brightness: expected relative ADF brightness of a pristine column per sublattice
    (Σ Z^1.7; orders the two site clusters). decode_threshold / min_distance_px: the config's
    `trainer.decode_threshold` / `trainer.min_distance_px` (the run's validation decoding, or a
    threshold tuned afterwards and written into a shipped model's config.yaml; predict's default).
    decode_threshold_tta: `trainer.decode_threshold_tta`, predict's default with test-time
    augmentation (`threshold_for`). site_priors: the config's named specimen priors as
    (num_sublattices, num_classes) per-site class tables (`stemjax.specimen.prior_tables`).
    train_prior: the one the network was trained on (`data.prior`). decode_prior:
    `trainer.decode_prior`, the prior predict assumes by default (None: the training rates, no
    shift; 'estimate': a first pass's rates). train_seed: the run's `trainer.seed` (its data keys;
    `trainer.init_from` warns on reuse).
    step: checkpoint step. source: the run directory.
    """

    graphdef: object
    state: object
    registry: object
    pixel_size_A: float
    image_px: int
    model_config: object
    sublattice_brightness: dict
    decode_threshold: float
    decode_threshold_tta: float
    min_distance_px: int
    site_priors: dict
    train_prior: str
    decode_prior: str | None
    train_seed: int
    step: int
    source: Path

    @property
    def downsample_factor(self) -> int:
        """Input sizes must be multiples of this (2^depth)."""
        return 2 ** int(self.model_config.depth)

    def threshold_for(self, tta: bool) -> float:
        """predict's default p_def threshold with or without test-time augmentation."""
        return self.decode_threshold_tta if tta else self.decode_threshold

    @functools.cached_property
    def _apply(self):
        graphdef = self.graphdef

        @jax.jit
        def apply(state, images):
            model = nnx.merge(graphdef, state)
            return model(images, deterministic=True)

        return apply

    def logits(self, images) -> jax.Array:
        """Per-pixel logits (B, H, W, C) of normalised images (B, H, W); H, W multiples of
        `downsample_factor`."""
        return self._apply(self.state, images)

    def logit_offsets(self, site_prior=None) -> np.ndarray:
        """Per-class logit offsets (C,) for micrographs whose sites follow `site_prior`
        (`stemjax.evaluation.prior_shift`): the name of one of the config's priors, a mapping
        {class name: per-site concentration} covering every defect class, or None for the
        model's `decode_prior` (zeros if it has none). Raises ValueError naming the bad entry.
        """
        from stemjax.evaluation.prior_shift import prior_shift_offsets
        from stemjax.specimen import concentration_table

        site_prior = self.decode_prior if site_prior is None else site_prior
        if site_prior == ESTIMATE:
            raise ValueError(
                "site_prior 'estimate' needs a first pass over the data: "
                "stemjax.predict.predict resolves it, logit_offsets cannot"
            )
        if site_prior is None:
            return np.zeros(self.registry.num_classes, np.float32)
        if isinstance(site_prior, str):
            if site_prior not in self.site_priors:
                raise ValueError(
                    f"site_prior {site_prior!r}: not a prior of {self.source}; known: "
                    f"{sorted(self.site_priors)} (or pass {{class name: concentration}})"
                )
            target = self.site_priors[site_prior]
        else:
            missing = sorted(set(self.registry.defect_names) - set(site_prior))
            if missing:
                raise ValueError(
                    f"site_prior: no concentration for {missing}; give every defect class of "
                    f"{list(self.registry.defect_names)} a per-site rate > 0"
                )
            target = concentration_table(dict(site_prior), self.registry, "site_prior")
        return prior_shift_offsets(
            self.site_priors[self.train_prior], target, list(self.registry.names)
        )


def _find_run_dir(path: Path) -> tuple[Path, Path, int | None]:
    """(run dir, config file, explicit step or None) for a run dir, checkpoints dir or step dir."""
    candidates = [(path, None)]
    if path.name.isdigit() and path.parent.name == "checkpoints":  # .../checkpoints/<step>
        # (not a multirun job folder, which Hydra numbers too: multirun/<date>/<time>/0)
        candidates = [(path.parent.parent, int(path.name))]
    elif path.name == "checkpoints":
        candidates = [(path.parent, None)]
    for run, step in candidates:
        for name in CONFIG_FILES:
            if (run / name).is_file():
                return run, run / name, step
    raise ModelLoadError(
        f"{path}: not a stemjax run directory: expected one of {list(CONFIG_FILES)} and "
        f"checkpoints/ (what `python -m stemjax.train` writes), or a checkpoints/<step> folder"
    )


def _sublattice_brightness(specimen) -> dict[str, float]:
    from ase.data import atomic_numbers

    def col(slots):
        return float(sum(atomic_numbers[s.element] ** 1.7 for s in slots))

    return {"metal": col(specimen.metal), "chalcogen": col(specimen.chalcogen)}


def load_model(path: str | Path, *, step: int | None = None, which: str = "best") -> TrainedModel:
    """Load a trained model from a run directory, its `checkpoints/` or a `checkpoints/<step>`.

    step: checkpoint step (default: the best by validation F1 if `which="best"` and known, else
    the latest). Raises ModelLoadError naming the path for a missing config or checkpoint, an
    invalid config, or weights that do not fit the config's model.
    """
    from stemjax.specimen import DefectRegistry, prior_tables, to_specimen_config
    from stemjax.training import Checkpointer, TrainConfig, init_train_state

    path = Path(path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"{path}: no such run directory or checkpoint")
    if which not in ("best", "latest"):
        raise ModelLoadError(f"which must be 'best' or 'latest', got {which!r}")
    run, config_file, path_step = _find_run_dir(path)
    step = path_step if step is None else int(step)
    try:
        raw = OmegaConf.load(config_file)
        raw.pop("hydra", None)
        cfg = OmegaConf.merge(OmegaConf.structured(TrainConfig), raw)
        obj = OmegaConf.to_object(cfg)
        specimen = to_specimen_config(cfg.specimen)
        registry = DefectRegistry.from_config(specimen, source=str(config_file))
        site_priors = prior_tables(specimen, registry, source=str(config_file))
        if obj.data.prior not in site_priors:
            raise ValueError(
                f"data.prior = {obj.data.prior!r} is not one of the specimen priors "
                f"{sorted(site_priors)}"
            )
        if obj.trainer.decode_prior not in (None, ESTIMATE, *site_priors):
            raise ValueError(
                f"trainer.decode_prior = {obj.trainer.decode_prior!r}: expected null, 'estimate' "
                f"or one of the specimen priors {sorted(site_priors)}"
            )
    except Exception as err:
        raise ModelLoadError(f"{config_file}: not a valid stemjax training config: {err}") from err

    ckpt_dir = run / "checkpoints"
    if not ckpt_dir.is_dir():
        raise ModelLoadError(f"{run}: no checkpoints/ folder next to {config_file.name}")
    mcfg = dataclasses.replace(obj.model, num_classes=registry.num_classes)
    with Checkpointer(ckpt_dir) as ckpt:
        steps = ckpt.all_steps()
        if not steps:
            raise ModelLoadError(f"{ckpt_dir}: contains no checkpoint")
        if step is None:
            step = (ckpt.best_step() if which == "best" else None) or ckpt.latest_step()
        if step not in steps:
            raise ModelLoadError(f"{ckpt_dir}: no checkpoint at step {step}; saved: {steps}")
        keys = ckpt.item_keys(step)
        tc = dataclasses.replace(obj.trainer, ema=obj.trainer.ema if "ema" in keys else 0.0)
        model_def, _, target, rngs = init_train_state(mcfg, tc)
        target = {k: v for k, v in target.items() if k in keys}
        try:
            _, restored = ckpt.restore(target, step)
        except Exception as err:
            raise ModelLoadError(
                f"{ckpt_dir / str(step)}: weights do not fit the model of {config_file} "
                f"(model: {dataclasses.asdict(obj.model)}): {err}"
            ) from err
    model = nnx.merge(model_def, restored["model"], rngs)
    if "ema" in restored:
        nnx.update(model, restored["ema"])
    graphdef, state = nnx.split(model)
    leaves = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    if not all(np.all(np.isfinite(x)) for x in leaves):
        raise ModelLoadError(f"{ckpt_dir / str(step)}: weights contain NaN/Inf")
    return TrainedModel(
        graphdef=graphdef,
        state=state,
        registry=registry,
        pixel_size_A=float(obj.microscope.pixel_size_angstrom),
        image_px=int(obj.data.image_size_px),
        model_config=mcfg,
        sublattice_brightness=_sublattice_brightness(specimen),
        decode_threshold=float(obj.trainer.decode_threshold),
        decode_threshold_tta=float(
            obj.trainer.decode_threshold
            if obj.trainer.decode_threshold_tta is None
            else obj.trainer.decode_threshold_tta
        ),
        min_distance_px=int(obj.trainer.min_distance_px),
        site_priors=site_priors,
        train_prior=str(obj.data.prior),
        decode_prior=obj.trainer.decode_prior,
        train_seed=int(obj.trainer.seed),
        step=int(step),
        source=run,
    )


def export_model(run_dir: str | Path, out_dir: str | Path, *, step: int | None = None) -> Path:
    """Write a slim, shippable copy of a trained run: `config.yaml` plus one checkpoint holding
    only the inference weights (the EMA weights when the run kept them; no optimizer state).

    `load_model(out_dir)` loads it like the run. Refuses to write into an existing `out_dir`.
    """
    from stemjax.training import Checkpointer

    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another folder")
    model = load_model(run_dir, step=step)
    run, config_file, _ = _find_run_dir(Path(run_dir))
    raw = OmegaConf.load(config_file)
    raw.pop("hydra", None)
    out.mkdir(parents=True)
    OmegaConf.save(raw, out / "config.yaml")
    merged = nnx.merge(model.graphdef, model.state)
    state = {"model": nnx.state(merged, nnx.Not(nnx.RngState))}
    with Checkpointer(run / "checkpoints") as src:
        metrics = src.metrics(model.step)
    with Checkpointer(out / "checkpoints", keep=1) as ckpt:
        ckpt.save(model.step, state, metrics=metrics)
    return out
