"""Training loop: checkpoint round trip, exact resume, overfit, NaN stop, TensorBoard events,
multirun + data parallel (CLI subprocess), config composition."""

import dataclasses
import logging
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from omegaconf import OmegaConf

from stemjax.config import config_dir, to_runtime
from stemjax.model import ModelConfig, UNet
from stemjax.training import (
    Checkpointer,
    NonFiniteError,
    init_train_state,
    load_train_config,
    train,
)
from stemjax.training.trainer import warm_start
from stemjax.trainingdata.pipeline import build_batch_maker

SMOKE = ["+experiment=wse2te", "trainer=smoke"]
FAST = [
    "trainer.progress=false",
    "trainer.val_batches=1",
    "trainer.class_weight_batches=1",
    "trainer.log_every=1",
]


def _cfg(*overrides):
    return load_train_config([*SMOKE, *FAST, *overrides])


@pytest.fixture(scope="module")
def makers():
    """(train, eval) BatchMakers for the smoke data, planned once for the module."""
    specimen, prior, corruption, data = to_runtime(_cfg())
    maker = build_batch_maker(specimen, prior, corruption, data)
    eval_maker = dataclasses.replace(maker, data=dataclasses.replace(maker.data, prior="eval"))
    return maker, eval_maker


def _params(run_dir: Path, step: int):
    """Model parameters saved at `step` in `run_dir` as a flat list of numpy arrays."""
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        _, state = ckpt.restore_raw(step)
    return [np.asarray(x) for x in jax.tree.leaves(state["model"])]


def _tensorboard_scalars(event_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} from the TFRecord event files in `event_dir` (no TF needed)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(event_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos : pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + length])
            pos += 12 + length + 4
            for v in event.summary.value:
                if v.HasField("simple_value"):
                    out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def _tiny(seed):
    cfg = ModelConfig(depth=2, width=8, blocks_per_level=1)
    model = UNet(cfg, rngs=nnx.Rngs(params=seed))
    return model, nnx.Optimizer(model, optax.adamw(1e-3), wrt=nnx.Param)


def test_checkpoint_round_trip_is_exact(tmp_path):
    model, opt = _tiny(0)
    saved = {"model": nnx.state(model), "opt": nnx.state(opt)}
    with Checkpointer(tmp_path / "ck", keep=2, best_metric="val_f1") as ckpt:
        ckpt.save(3, saved, metrics={"val_f1": 0.5})
        ckpt.save(6, saved)
        ckpt.save(9, saved, metrics={"val_f1": 0.1})
        ckpt.save(12, saved)
    other, other_opt = _tiny(1)  # different initial parameters
    target = {"model": nnx.state(other), "opt": nnx.state(other_opt)}
    with Checkpointer(tmp_path / "ck", keep=2, best_metric="val_f1") as ckpt:
        # latest 2 kept, plus the best by val_f1
        assert ckpt.all_steps() == [3, 9, 12]
        assert ckpt.best_step() == 3 and ckpt.latest_step() == 12
        step, restored = ckpt.restore(target)
    assert step == 12
    nnx.update(other, restored["model"])
    nnx.update(other_opt, restored["opt"])
    for a, b in zip(
        jax.tree.leaves(nnx.state(model)), jax.tree.leaves(nnx.state(other)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(
        jax.tree.leaves(nnx.state(opt)), jax.tree.leaves(nnx.state(other_opt)), strict=True
    ):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_reproduces_uninterrupted_run(tmp_path, makers):
    cfg = _cfg(
        "trainer.steps=6",
        "trainer.warmup_steps=2",
        "trainer.checkpoint_every=3",
        "trainer.eval_every=6",
        "trainer.ema=0.9",
    )
    full = tmp_path / "full"
    f1 = train(cfg, full, makers=makers)
    assert isinstance(f1, float) and 0.0 <= f1 <= 1.0

    # interrupted after step 3 (checkpoint there), then the same command again resumes
    part = tmp_path / "part"
    train(cfg, part, makers=makers, stop_at=3)
    with Checkpointer(part / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 3
    train(cfg, part, makers=makers)

    a, b = _params(full, 6), _params(part, 6)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # the resumed run actually trained (step-6 parameters differ from step 3)
    assert any(not np.array_equal(x, y) for x, y in zip(_params(part, 3), b, strict=True))

    # outputs: metrics.csv with one row per logged step (resume rewrote nothing twice), PNG
    rows = (part / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("step,loss,grad_norm,lr")
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    assert "val_f1" in rows[0] and "val_loss" in rows[0]
    assert list((full / "figures").glob("val_*.png"))

    # TensorBoard: the same scalars, steps 1..6 once each after the resume (events purged)
    scalars = _tensorboard_scalars(part / "tensorboard")
    assert sorted(s for s, _ in scalars["train/loss"]) == [1, 2, 3, 4, 5, 6]
    csv_loss = {int(r.split(",")[0]): float(r.split(",")[1]) for r in rows[1:]}
    for step, value in scalars["train/loss"]:
        assert value == pytest.approx(csv_loss[step], rel=1e-6)
    assert [s for s, _ in scalars["val/f1"]] == [6]


def test_max_minutes_checkpoints_stops_and_resumes(tmp_path, makers, caplog):
    """A wall-clock budget already spent at step 1: that step is validated and checkpointed,
    the run stops with a message, and the same config without the budget resumes to the end."""
    base = ["trainer.steps=4", "trainer.warmup_steps=1", "trainer.eval_every=0",
            "trainer.checkpoint_every=0", "trainer.tensorboard=false"]  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="stemjax.training.trainer"):
        f1 = train(_cfg(*base, "trainer.max_minutes=1e-9"), tmp_path, makers=makers)
    assert "max_minutes" in caplog.text and "after step 1 of 4" in caplog.text
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [1]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1]
    assert "val_f1" in rows[0] and 0.0 <= f1 <= 1.0  # validated at the stop
    train(_cfg(*base), tmp_path, makers=makers)
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        assert ckpt.latest_step() == 4
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="max_minutes"):
        train(_cfg(*base, "trainer.max_minutes=-1"), tmp_path / "bad", makers=makers)


def test_fixed_batch_overfits(tmp_path, makers):
    """A few steps on one fixed batch drive its loss well down (the trainer wiring learns)."""
    cfg = _cfg(
        "trainer.steps=15",
        "trainer.fixed_batch=true",
        "trainer.learning_rate=1e-2",
        "trainer.warmup_steps=1",
        "trainer.eval_every=0",
        "trainer.checkpoint_every=0",
        "trainer.tensorboard=false",
    )
    train(cfg, tmp_path, makers=makers)
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    loss = [float(r.split(",")[1]) for r in rows[1:]]
    assert len(loss) == 15 and all(np.isfinite(loss))
    assert np.mean(loss[-3:]) < 0.5 * loss[0], loss


def test_multirun_two_jobs_and_data_parallel(tmp_path):
    """`python -m stemjax.train -m ... trainer.devices=1,2` with 2 forced host CPU devices: two
    complete run directories, and the 2-device data-parallel run (batch sharded, parameters
    replicated) reaches the parameters of the 1-device run on the identical data stream."""
    sweep = tmp_path / "sweep"
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
    }
    cmd = [sys.executable, "-m", "stemjax.train", "-m", *SMOKE, *FAST, "trainer.devices=1,2"]
    cmd += ["trainer.steps=3", "trainer.eval_every=3", "trainer.checkpoint_every=3"]
    cmd += ["trainer.class_weight_batches=0"]
    cmd += [f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [p.name for p in jobs] == ["0", "1"]
    for devices, job in zip((1, 2), jobs, strict=True):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert f"trainer.devices={devices}" in overrides
        assert (job / ".hydra" / "config.yaml").exists()
        rows = (job / "metrics.csv").read_text().splitlines()
        header = rows[0].split(",")
        last = dict(zip(header, rows[-1].split(","), strict=True))
        assert int(last["step"]) == 3 and int(float(last["devices"])) == devices
        assert 0.0 <= float(last["val_f1"]) <= 1.0
        with Checkpointer(job / "checkpoints") as ckpt:
            assert ckpt.all_steps() == [3]
        assert _tensorboard_scalars(job / "tensorboard")["train/loss"]
        assert list((job / "figures").glob("val_*.png"))
    # identical data stream and identical training: losses and gradient norms agree at every
    # step (parameters are not compared: Adam turns the rounding noise of gradients that are zero
    # in exact arithmetic, e.g. conv biases before GroupNorm, into full ±lr steps)
    one, two = (_csv_columns(job / "metrics.csv") for job in jobs)
    for key in ("loss", "grad_norm", "val_loss"):
        np.testing.assert_allclose(one[key], two[key], rtol=2e-5, err_msg=key)


def test_init_from_starts_at_the_source_weights(tmp_path, makers, caplog):
    """trainer.init_from: a new run starts from a trained run's (EMA) weights with a fresh
    optimizer; at learning rate 0 its weights stay exactly the source's. A source with another
    architecture or a missing path is refused, naming trainer.init_from."""
    from stemjax.predict import load_model

    source = tmp_path / "source"
    cfg = _cfg("trainer.steps=2", "trainer.eval_every=0", "trainer.ema=0.5")
    train(cfg, source, makers=makers)
    OmegaConf.save(cfg, source / "config.yaml")
    src = load_model(source)

    def leaves(model):
        return [np.asarray(x) for x in jax.tree.leaves(nnx.state(nnx.merge(model.graphdef,
                model.state), nnx.Param))]  # fmt: skip

    fine = tmp_path / "fine"
    ft = _cfg("trainer.steps=1", "trainer.eval_every=0", "trainer.ema=0.5", "trainer.seed=7",
              "trainer.learning_rate=0", f"trainer.init_from={source}")  # fmt: skip
    train(ft, fine, makers=makers)
    OmegaConf.save(ft, fine / "config.yaml")
    for a, b in zip(leaves(src), leaves(load_model(fine)), strict=True):
        np.testing.assert_array_equal(a, b)
    # without init_from the run would start elsewhere (the check above can fail)
    _, _, fresh, _ = init_train_state(src.model_config, OmegaConf.to_object(ft).trainer)
    fresh_params = [np.asarray(x) for x in jax.tree.leaves(fresh["ema"])]
    assert any(not np.array_equal(a, b) for a, b in zip(leaves(src), fresh_params, strict=True))
    # the source's own data seed again: a warning names it (the fine-tune above used 7: none)
    with caplog.at_level(logging.WARNING, logger="stemjax.training.trainer"):
        warm_start(fresh, source, src.model_config, src.registry.names, seed=src.train_seed)
    assert "same data keys" in caplog.text

    wide = _cfg("trainer.steps=1", "model.width=12", f"trainer.init_from={source}")
    differs = r"trainer.init_from=.*model\.width \(\d+ there, 12 here\)"
    with pytest.raises(ValueError, match=differs):
        train(wide, tmp_path / "wide", makers=makers)
    with pytest.raises(ValueError, match=r"trainer.init_from: .*nowhere"):
        train(_cfg("trainer.steps=1", f"trainer.init_from={tmp_path / 'nowhere'}"),
              tmp_path / "bad", makers=makers)  # fmt: skip


def _csv_columns(path: Path) -> dict[str, list[float]]:
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    cols = {k: [] for k in header}
    for r in rows[1:]:
        for k, v in zip(header, r.split(","), strict=True):
            if v != "":
                cols[k].append(float(v))
    return cols


def test_nan_stops_with_step_and_saves_nothing_corrupt(tmp_path, makers):
    cfg = _cfg(
        "trainer.steps=4",
        "trainer.learning_rate=nan",
        "trainer.checkpoint_every=1",
        "trainer.eval_every=0",
    )
    with pytest.raises(NonFiniteError, match=r"at step (\d+)") as err:
        train(cfg, tmp_path, makers=makers)
    bad_step = int(re.search(r"at step (\d+)", str(err.value)).group(1))
    assert 1 <= bad_step <= 2  # the first update already applies a NaN learning rate
    with Checkpointer(tmp_path / "checkpoints") as ckpt:
        saved = ckpt.all_steps()
    assert all(s < bad_step for s in saved)  # the NaN state was never saved
    for s in saved:
        assert all(np.all(np.isfinite(x)) for x in _params(tmp_path, s))


def _options(group):
    return sorted(p.stem for p in (Path(config_dir()) / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", _options("experiment"))
@pytest.mark.parametrize("trainer", _options("trainer"))
def test_train_config_composes(experiment, trainer):
    cfg = load_train_config([f"+experiment={experiment}", f"trainer={trainer}"])
    obj = OmegaConf.to_object(cfg)  # typed: raises on a wrong type
    assert obj.trainer.steps > 0 and obj.model.num_classes >= 2
    if trainer == "smoke":
        assert cfg.data.image_size_px <= 64 and cfg.trainer.steps <= 50
    # every loss and model option composes with it too
    for loss in _options("loss"):
        load_train_config([f"+experiment={experiment}", f"trainer={trainer}", f"loss={loss}"])
    for model in _options("model"):
        load_train_config([f"+experiment={experiment}", f"trainer={trainer}", f"model={model}"])


def test_unknown_key_and_wrong_type_fail_at_start():
    with pytest.raises(Exception, match="nosuchkey"):
        load_train_config([*SMOKE, "trainer.nosuchkey=1"])
    with pytest.raises(Exception, match="steps"):
        load_train_config([*SMOKE, "trainer.steps=many"])


def test_slurm_launcher_config_composes():
    """conf/hydra/launcher/slurm.yaml extends hydra-submitit-launcher's SLURM launcher."""
    from hydra import compose, initialize_config_dir

    from stemjax.training import register_train_configs

    register_train_configs()
    overrides = [*SMOKE, "hydra/launcher=slurm", "hydra.launcher.partition=gpu"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node >= 1
    assert launcher.tasks_per_node == 1  # one process per node drives all its GPUs
