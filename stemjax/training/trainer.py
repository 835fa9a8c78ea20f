"""The training loop: one straight function in banner-commented sections (big_vision style).

`train(cfg, output_dir)` takes a composed `TrainConfig` DictConfig (`TrainConfig` below)
and returns the final validation metric. Every step draws its data key as
`fold_in(key(trainer.seed), step)` and simulates + corrupts the batch INSIDE the jitted step, so
the data stream is a pure function of (seed, step) and a resumed run reproduces an uninterrupted
one. Metrics come to the host only on log / eval / checkpoint steps, where NaN/Inf stops the run
(naming the step) before anything is saved.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from stemjax.config import Config
from stemjax.model import LossConfig, ModelConfig

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """Optimisation and bookkeeping (Hydra schema `trainer/`).

    steps: optimiser steps in total. learning_rate: peak AdamW rate, reached after
    warmup_steps (linear from 0) and cosine-decayed to 0 at `steps`. weight_decay: AdamW decoupled
    decay. grad_clip: global-norm clip (0 = off). ema: EMA decay of the weights (0 = off; the
    EMA weights are then used for validation). log_every / eval_every / checkpoint_every: in
    steps (0 = only at the end). keep_checkpoints: latest checkpoints kept (plus the best by
    validation F1). val_batches: validation batches (drawn once from the EVAL prior with keys
    from `val_seed`; scored on the whole image, a detection of a defect centred just outside it
    neither right nor wrong, `stemjax.evaluation.restrict_to_region`). resume: continue from
    the latest checkpoint in the run directory.
    seed: data stream and initialisation seed. class_weight_batches: training batches whose
    class-pixel frequencies set the loss weights (0 = unweighted). decode_threshold /
    min_distance_px: validation decoding (see `stemjax.evaluation.decode_defects`).
    decode_threshold_tta: the threshold `stemjax.predict` uses with `tta=True` (the mean of 8
    views' probabilities is less peaked than one view's, so its best threshold is lower; tuned
    afterwards like `decode_threshold`); None: `decode_threshold`. Validation does not use TTA.
    decode_prior: name of the specimen prior whose defect rates `stemjax.predict` assumes by
    default: the logits are shifted from `data.prior`'s rates to its rates
    (`stemjax.evaluation.prior_shift`); 'estimate': to the rates of a first pass over the data
    at the training odds (the network runs twice); None: no shift. Validation does not shift.
    progress: show a tqdm progress bar. images_every_eval: write the input/target/prediction PNG
    (and the same figure to TensorBoard). tensorboard: write TensorBoard event files
    (`tensorboard/` in the run directory) next to metrics.csv. devices: local devices to train on
    data-parallel (0 = all); the batch is split over a 1-D `Mesh` axis 'data' and must be
    divisible by it, parameters are replicated. fixed_batch: debugging aid, every step reuses
    the step-0 batch (a model that cannot overfit it has a bug). init_from: a trained run
    directory or exported model (`stemjax.predict.export_model`, e.g. the shipped
    `experiments/wse2te/model`; a run's best checkpoint, as `load_model` picks, or
    `<run>/checkpoints/<step>`) whose weights start a new run instead of a random
    initialisation (fine-tuning, e.g. on a microscope prior fitted by `stemjax.calibrate`); the
    architecture and defect classes must match, the optimizer and its schedule start afresh.
    Ignored when the run resumes from its own checkpoint. Give the new run a `seed` other than
    the source run's, or its steps draw the source's data keys again. max_minutes: wall-clock
    budget of this call in minutes, counted from the start of `train` (0 = none): the first
    step to end past it is validated and checkpointed, then the run stops; the same command
    resumes it on the same schedule (a GPU lease, a batch job's time limit). Leave room for one
    validation and one save after the budget.
    """

    steps: int = 20000
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    ema: float = 0.0
    log_every: int = 50
    eval_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    val_batches: int = 8
    val_seed: int = 12345
    resume: bool = True
    seed: int = 0
    class_weight_batches: int = 4
    decode_threshold: float = 0.5
    decode_threshold_tta: float | None = None
    min_distance_px: int = 3
    decode_prior: str | None = None
    progress: bool = True
    images_every_eval: bool = True
    tensorboard: bool = True
    devices: int = 0
    fixed_batch: bool = False
    init_from: str | None = None
    max_minutes: float = 0.0


@dataclass
class TrainConfig(Config):
    """Top-level schema of `conf/train.yaml`: the data `Config` plus model, loss and trainer."""

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)


TRAIN_CONFIG_NAME = "train_config"


def register_train_configs() -> None:
    """Register the data schemas and `train_config` (TrainConfig) in Hydra's ConfigStore."""
    from hydra.core.config_store import ConfigStore

    from stemjax.config import register_configs

    register_configs()
    ConfigStore.instance().store(name=TRAIN_CONFIG_NAME, node=TrainConfig)


def load_train_config(overrides=()):
    """Compose `conf/train.yaml` with Hydra overrides, without a Hydra app (tests, notebooks)."""
    from hydra import compose, initialize_config_dir

    from stemjax.config import config_dir

    register_train_configs()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


class NonFiniteError(FloatingPointError):
    """Loss or gradient became NaN/Inf; the message names the step."""


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def make_schedule(tc: TrainerConfig) -> optax.Schedule:
    """Linear warm-up to `learning_rate`, cosine decay to 0 at `steps`."""
    warmup = int(min(max(tc.warmup_steps, 0), max(tc.steps - 1, 0)))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=tc.learning_rate,
        warmup_steps=warmup,
        decay_steps=max(tc.steps, warmup + 1),
        end_value=0.0,
    )


def make_optimizer(tc: TrainerConfig) -> optax.GradientTransformation:
    """clip_by_global_norm (if grad_clip > 0) → AdamW on the warm-up/cosine schedule."""
    parts = []
    if tc.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(tc.grad_clip))
    parts.append(optax.adamw(make_schedule(tc), weight_decay=tc.weight_decay))
    return optax.chain(*parts)


def _every(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _model_state(model):
    """What is checkpointed of the model: everything but RNG streams (reseeded per step)."""
    return nnx.state(model, nnx.Not(nnx.RngState))


def _param_copy(model):
    """The model's parameters in their own buffers (the EMA's starting point)."""
    return jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))


def class_frequencies(maker, n_batches: int, seed: int) -> np.ndarray | None:
    """Pixel counts per class over `n_batches` training batches (keys from `seed`); (C,)."""
    if n_batches <= 0:
        return None
    c = maker.registry.num_classes
    counts = np.zeros(c, np.float64)
    base = jax.random.fold_in(jax.random.key(seed), 0x5EED)
    for i in range(n_batches):
        t = np.asarray(maker.make_batch(jax.random.fold_in(base, i)).targets)
        if t.ndim == 4:  # heatmaps (B, C, H, W)
            counts += t.sum(axis=(0, 2, 3))
        else:
            counts += np.bincount(t.reshape(-1), minlength=c)[:c]
    return counts


def validation_set(eval_maker, n_batches: int, seed: int) -> list:
    """`n_batches` fixed batches from the eval-prior maker, keys fold_in(key(seed), i); on host."""
    base = jax.random.key(seed)
    return [
        jax.device_get(eval_maker.make_batch(jax.random.fold_in(base, i))) for i in range(n_batches)
    ]


def data_mesh(n_devices: int = 0):
    """1-D `Mesh` (axis 'data') over the first `n_devices` local devices (0 = all).

    Data parallel on one host: batch sharded over 'data', parameters replicated, XLA inserts the
    gradient all-reduce. Multi-host: one process per host calls `jax.distributed.initialize()`
    first (see README); each process trains on its local devices with the same code.
    """
    from jax.sharding import Mesh

    local = jax.local_devices()
    n = len(local) if n_devices <= 0 else int(n_devices)
    if n > len(local):
        raise ValueError(
            f"trainer.devices={n_devices} but only {len(local)} local device(s): "
            f"{[str(d) for d in local]}"
        )
    return Mesh(np.array(local[:n]), ("data",))


def figure(image, target, logits, title: str = ""):
    """Matplotlib figure of input / target / predicted class map (argmax) for one image."""
    from matplotlib.figure import Figure

    target = np.asarray(target)
    if target.ndim == 3:  # heatmaps (C, H, W) → class map
        target = target.argmax(0)
    pred = np.asarray(logits).argmax(-1)
    vmax = max(int(target.max()), int(pred.max()), 1)
    fig = Figure(figsize=(10, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].imshow(np.asarray(image), cmap="gray")
    axes[0].set_title("input")
    axes[1].imshow(target, cmap="tab10", vmin=0, vmax=max(vmax, 9), interpolation="nearest")
    axes[1].set_title("target")
    axes[2].imshow(pred, cmap="tab10", vmin=0, vmax=max(vmax, 9), interpolation="nearest")
    axes[2].set_title("prediction")
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


class MetricsWriter:
    """Appends rows to metrics.csv (header grows if new columns appear; file rewritten) and, if
    `tensorboard_dir` is given, the same scalars to TensorBoard event files (train/… and val/…).

    resume_step: a resumed run drops logged rows and TensorBoard events after this step.
    """

    def __init__(self, path: Path, tensorboard_dir: Path | None = None, resume_step: int = 0):
        self.path = path
        self.rows: list[dict] = []
        if path.exists():
            with path.open() as f:
                self.rows = [r for r in csv.DictReader(f) if int(float(r["step"])) <= resume_step]
        self.tb = None
        if tensorboard_dir is not None:
            from tensorboardX import SummaryWriter

            self.tb = SummaryWriter(str(tensorboard_dir), purge_step=resume_step + 1)

    def figure(self, tag: str, fig, step: int) -> None:
        if self.tb is not None:
            self.tb.add_figure(tag, fig, global_step=step, close=False)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def write(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        # a resumed run rewrites the steps after its checkpoint
        self.rows = [r for r in self.rows if int(float(r["step"])) < step or r is row]
        self.rows.append(row)
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(self.rows)
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float):
                    tag = f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}"
                    self.tb.add_scalar(tag, v, global_step=step)
            self.tb.flush()


def init_train_state(model_cfg, tc: TrainerConfig):
    """Initial training state: (model graphdef, optimizer graphdef, state, rng_state).

    state = {"model": parameters and other variables (RNG streams excluded), "opt": optimizer
    state, "ema": EMA copy of the parameters (only if tc.ema > 0)}: what is checkpointed.
    rng_state: the model's RNG streams (not checkpointed; dropout is reseeded every step).
    """
    from stemjax.model import create_unet

    model = create_unet(model_cfg, seed=tc.seed)
    optimizer = nnx.Optimizer(model, make_optimizer(tc), wrt=nnx.Param)
    model_def, _ = nnx.split(model)
    opt_def, _ = nnx.split(optimizer)
    state = {"model": _model_state(model), "opt": nnx.state(optimizer)}
    if tc.ema > 0:
        state["ema"] = _param_copy(model)
    return model_def, opt_def, state, nnx.state(model, nnx.RngState)


def warm_start(state: dict, source, model_cfg, class_names, seed: int) -> dict:
    """`state` (as `init_train_state` makes it) with the model and EMA weights of the trained
    run or exported model at `source` (`trainer.init_from`); the optimizer state is kept fresh.

    Raises ValueError naming `trainer.init_from` when `source` cannot be loaded, or when its
    architecture or defect classes differ from this run's (naming the differing fields).
    """
    from stemjax.predict.model import ModelLoadError, load_model

    try:
        src = load_model(source)
    except ModelLoadError as err:
        raise ValueError(f"trainer.init_from: {err}") from err
    if src.model_config != model_cfg:
        a, b = dataclasses.asdict(src.model_config), dataclasses.asdict(model_cfg)
        diff = {k: (a[k], b[k]) for k in a if a[k] != b.get(k)}
        raise ValueError(
            f"trainer.init_from={source}: its model differs from this run's in "
            + ", ".join(f"model.{k} ({x} there, {y} here)" for k, (x, y) in diff.items())
        )
    if list(src.registry.names) != list(class_names):
        raise ValueError(
            f"trainer.init_from={source}: its classes {list(src.registry.names)} differ from "
            f"this run's {list(class_names)} (specimen defects)"
        )
    if src.train_seed == seed:
        log.warning(
            "trainer.init_from=%s was trained with trainer.seed=%d, as this run is: its steps "
            "draw the same data keys again; set another trainer.seed for fresh data",
            source,
            seed,
        )
    merged = nnx.merge(src.graphdef, src.state)
    state = dict(state, model=_model_state(merged))
    if "ema" in state:
        state["ema"] = _param_copy(merged)
    log.info("initialised from %s (step %d)", src.source, src.step)
    return state


def make_train_step(model_def, opt_def, loss_fn, tc: TrainerConfig, make_data, *, dropout=False):
    """The (un-jitted) step `(state, rngs, step, batch=None) -> (state, metrics)`.

    make_data(step) -> Batch is traced INSIDE the step (simulation + corruption + targets on the
    device); a given `batch` replaces it (network-only timing in benchmarks/train_step.py).
    Forward, backward, optax update, EMA; metrics stay on device (loss, grad_norm, count of
    non-finite parameters).
    """
    dropout_key = jax.random.fold_in(jax.random.key(tc.seed), 0xD0)

    def train_step(state, rngs, step, batch=None):
        model = nnx.merge(model_def, state["model"], rngs)
        optimizer = nnx.merge(opt_def, state["opt"])
        if dropout:
            nnx.reseed(model, dropout=jax.random.fold_in(dropout_key, step))
        if batch is None:
            batch = make_data(step)

        def objective(m):
            return loss_fn(m(batch.images), batch.targets)

        loss, grads = nnx.value_and_grad(objective)(model)
        optimizer.update(model, grads)
        new = {"model": _model_state(model), "opt": nnx.state(optimizer)}
        if "ema" in state:
            params = nnx.state(model, nnx.Param)
            new["ema"] = jax.tree.map(
                lambda e, p: tc.ema * e + (1.0 - tc.ema) * p, state["ema"], params
            )
        nonfinite = sum(
            jnp.sum(~jnp.isfinite(p)) for p in jax.tree.leaves(nnx.state(model, nnx.Param))
        )
        metrics = {
            "loss": loss,
            "grad_norm": optax.tree.norm(grads),
            "nonfinite_params": nonfinite.astype(jnp.float32),
        }
        return new, metrics

    return train_step


# ------------------------------------------------------------------------------------------------
# The training function
# ------------------------------------------------------------------------------------------------
def train(
    cfg, output_dir: str | Path, *, makers: tuple | None = None, stop_at: int | None = None
) -> float:
    """Train the U-Net described by `cfg` (a composed TrainConfig DictConfig or object).

    output_dir: run directory (metrics.csv, checkpoints/, figures/). makers: optional prebuilt
    (train BatchMaker, eval BatchMaker) to skip the host-side planning (tests). stop_at: stop
    after this step (simulates an interrupted run; the schedule still spans trainer.steps).
    Returns the final validation F1 over all defects (0.0 when undefined).
    """
    from omegaconf import DictConfig, OmegaConf

    t_start = time.perf_counter()
    from stemjax.config import to_runtime
    from stemjax.evaluation import decode_defects, evaluate, restrict_to_region
    from stemjax.model import make_loss
    from stemjax.training.checkpoint import Checkpointer
    from stemjax.trainingdata.pipeline import build_batch_maker

    # ---------------------------------------------------------------------------- config ------
    obj = OmegaConf.to_object(cfg) if isinstance(cfg, DictConfig) else cfg
    tc: TrainerConfig = obj.trainer
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "figures").mkdir(exist_ok=True)
    if tc.steps <= 0:
        raise ValueError(f"trainer.steps must be positive, got {tc.steps}")
    if tc.max_minutes < 0:
        raise ValueError(f"trainer.max_minutes must be >= 0 (0 = no limit), got {tc.max_minutes}")
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = data_mesh(tc.devices)
    n_devices = mesh.devices.size
    replicated, batch_sharded = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))

    # ---------------------------------------------------------------------------- data --------
    if makers is None:
        specimen, prior, corruption, data = to_runtime(cfg)
        maker = build_batch_maker(specimen, prior, corruption, data)
        eval_maker = dataclasses.replace(maker, data=dataclasses.replace(maker.data, prior="eval"))
    else:
        maker, eval_maker = makers
    registry = maker.registry
    if maker.data.batch_size % n_devices:
        raise ValueError(
            f"data.batch_size={maker.data.batch_size} must be divisible by the {n_devices} "
            f"devices of the data-parallel mesh (set trainer.devices or data.batch_size)"
        )
    num_classes = registry.num_classes
    pixel_size = float(maker.pixel_size)
    val_set = validation_set(eval_maker, tc.val_batches, tc.val_seed)
    freqs = class_frequencies(maker, tc.class_weight_batches, tc.seed)

    # ---------------------------------------------------------------------------- model -------
    mcfg = dataclasses.replace(obj.model, num_classes=num_classes)
    model_def, opt_def, state, rng_state = init_train_state(mcfg, tc)
    schedule = make_schedule(tc)
    loss_fn = make_loss(obj.loss, freqs)
    use_dropout = mcfg.dropout > 0
    rng_state = jax.device_put(rng_state, replicated)

    # ---------------------------------------------------------------------------- steps -------
    data_key = jax.random.key(tc.seed)

    def make_data(step):
        data_step = jnp.zeros_like(step) if tc.fixed_batch else step
        return maker._batch(jax.random.fold_in(data_key, data_step), batch_sharded)

    train_step = make_train_step(model_def, opt_def, loss_fn, tc, make_data, dropout=use_dropout)
    train_step = jax.jit(train_step, donate_argnums=(0,), out_shardings=(replicated, replicated))

    @functools.partial(jax.jit, out_shardings=batch_sharded)
    def predict(state, rngs, images):
        model = nnx.merge(model_def, state["model"], rngs)
        if "ema" in state:
            nnx.update(model, state["ema"])
        logits = model(images, deterministic=True)
        return logits

    def validate(state, step: int) -> dict[str, float]:
        preds, losses, first = [], [], None
        for batch in val_set:
            logits = predict(state, rng_state, jax.device_put(batch.images, batch_sharded))
            losses.append(float(loss_fn(logits, batch.targets)))
            det = decode_defects(
                logits, threshold=tc.decode_threshold, min_distance_px=tc.min_distance_px
            )
            det = jax.device_get(det)
            preds += [
                {"points": det.points[b], "classes": det.classes[b], "valid": det.valid[b]}
                for b in range(det.points.shape[0])
            ]
            if first is None:
                first = (batch.images[0], batch.targets[0], np.asarray(logits[0]))
        # whole image, a detection of a partly visible defect centred just outside it neutral
        # (the targets mark those, `DataConfig.edge_targets`)
        size = val_set[0].images.shape[1:] if val_set else (0, 0)
        pairs = [
            restrict_to_region(p, {"points": b.points[i], "classes": b.classes[i]}, size, 0.0,
                               0.8 / pixel_size)
            for p, (b, i) in zip(preds, ((b, i) for b in val_set
                                         for i in range(b.points.shape[0])), strict=True)
        ]  # fmt: skip
        preds, gts = [p for p, _ in pairs], [g for _, g in pairs]
        result = evaluate(preds, gts, num_classes, list(registry.names), pixel_size)
        scalars = {"val_" + k: v for k, v in result.scalars().items()}
        scalars["val_loss"] = float(np.mean(losses)) if losses else float("nan")
        scalars.setdefault("val_f1", 0.0)
        if tc.images_every_eval and first is not None:
            fig = figure(*first, title=f"step {step}")
            fig.savefig(out / "figures" / f"val_{step:07d}.png", dpi=80)
            writer.figure("val/example", fig, step)
        return scalars

    # ---------------------------------------------------------------------------- resume ------
    ckpt = Checkpointer(out / "checkpoints", keep=tc.keep_checkpoints)
    start = 0
    if tc.resume and ckpt.latest_step() is not None:
        start, state = ckpt.restore(state)
        log.info("resumed from checkpoint at step %d", start)
    elif tc.init_from:
        state = warm_start(state, tc.init_from, mcfg, registry.names, tc.seed)
    state = jax.device_put(state, replicated)
    writer = MetricsWriter(
        out / "metrics.csv", out / "tensorboard" if tc.tensorboard else None, resume_step=start
    )

    # ---------------------------------------------------------------------------- loop --------
    last = tc.steps if stop_at is None else min(int(stop_at), tc.steps)
    final_f1 = 0.0
    progress = None
    if tc.progress:
        from tqdm.auto import tqdm

        progress = tqdm(total=tc.steps, initial=start, desc="train", dynamic_ncols=True)
    t0, n_since = time.perf_counter(), 0
    try:
        for step in range(start + 1, last + 1):
            state, metrics = train_step(state, rng_state, jnp.asarray(step, jnp.uint32))
            n_since += 1
            out_of_time = (
                tc.max_minutes > 0
                and step < last
                and (time.perf_counter() - t_start >= 60.0 * tc.max_minutes)
            )
            do_log = _every(step, tc.log_every, tc.steps) or step == last or out_of_time
            do_eval = _every(step, tc.eval_every, tc.steps) or out_of_time
            do_ckpt = _every(step, tc.checkpoint_every, tc.steps) or step == last or out_of_time
            if progress is not None:
                progress.update(1)
            if not (do_log or do_eval or do_ckpt):
                continue
            # -- host: metrics, NaN check (before any save) ---------------------------------
            host = {k: float(v) for k, v in jax.device_get(metrics).items()}
            bad = [k for k, v in host.items() if not math.isfinite(v)]
            if host.pop("nonfinite_params") > 0:
                bad.append("parameters")
            if bad:
                raise NonFiniteError(
                    f"non-finite {', '.join(bad)} at step {step} "
                    f"({', '.join(f'{k}={host[k]}' for k in bad if k in host)}); stopping "
                    f"without saving a checkpoint of this state"
                )
            dt = time.perf_counter() - t0
            row: dict[str, Any] = {
                "step": step,
                "loss": host["loss"],
                "grad_norm": host["grad_norm"],
                "lr": float(schedule(step - 1)),
                "images_per_s": n_since * maker.data.batch_size / max(dt, 1e-9),
                "devices": n_devices,
            }
            n_since = 0
            val = None
            if do_eval:
                val = validate(state, step)
                row.update(val)
                final_f1 = float(val["val_f1"])
            writer.write(row)
            if progress is not None:
                progress.set_postfix(
                    loss=f"{host['loss']:.4f}", img_s=f"{row['images_per_s']:.1f}", refresh=False
                )
            headline = ("loss", "grad_norm", "lr", "images_per_s", "val_loss", "val_recall")
            headline += ("val_precision", "val_f1")
            log.info(
                "step %d: %s",
                step,
                ", ".join(f"{k}={row[k]:.4g}" for k in headline if k in row),
            )
            if do_ckpt:
                ckpt.save(step, state, metrics=val)
            if out_of_time:
                log.warning(
                    "trainer.max_minutes=%g reached: stopped after step %d of %d (checkpoint "
                    "saved); run the same command again to resume",
                    tc.max_minutes, step, tc.steps,
                )  # fmt: skip
                break
            t0 = time.perf_counter()  # throughput excludes validation and saving
    finally:
        if progress is not None:
            progress.close()
        ckpt.close()
        writer.close()
    return final_f1
