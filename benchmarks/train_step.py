"""Train-step time split into data generation (simulate + corrupt + targets) and network.

Builds the run's data pipeline and model from the training config (default: the wse2te
experiment at its training size) and times, each jitted and averaged over `--repeat` steps after
a warm-up:

- data only: `make_batch(key)` (specimen sampling, simulation, corruption, targets);
- network only: the train step (forward, backward, AdamW update) on a fixed device-resident batch;
- full step: the trainer's step, simulation inside (what `python -m stemjax.train` runs).

Prints a table with ms/step, images/s and the simulation share of the step.

    python benchmarks/train_step.py [--repeat 3] [overrides ...]
    python benchmarks/train_step.py trainer=smoke            # small data and tiny model
"""

import argparse
import dataclasses
import os
import platform
import time

import jax
import jax.numpy as jnp
from omegaconf import OmegaConf

from stemjax.config import to_runtime
from stemjax.model import make_loss
from stemjax.training import init_train_state, load_train_config, make_train_step
from stemjax.trainingdata.pipeline import build_batch_maker


def timed(fn, repeat):
    """Mean seconds per call of `fn(i)` over `repeat` calls after one warm-up call."""
    jax.block_until_ready(fn(0))
    t0 = time.perf_counter()
    for i in range(1, repeat + 1):
        jax.block_until_ready(fn(i))
    return (time.perf_counter() - t0) / repeat


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    cfg = load_train_config(["+experiment=wse2te", *args.overrides])
    obj = OmegaConf.to_object(cfg)
    tc = obj.trainer

    t0 = time.perf_counter()
    maker = build_batch_maker(*to_runtime(cfg))
    plan_s = time.perf_counter() - t0
    batch_size = maker.data.batch_size
    mcfg = dataclasses.replace(obj.model, num_classes=maker.registry.num_classes)
    model_def, opt_def, state, rngs = init_train_state(mcfg, tc)
    loss_fn = make_loss(obj.loss, None)
    key = jax.random.key(tc.seed)

    def make_data(step):
        return maker._batch(jax.random.fold_in(key, step))

    step_fn = make_train_step(model_def, opt_def, loss_fn, tc, make_data)
    full = jax.jit(step_fn, donate_argnums=(0,))
    network = jax.jit(step_fn, donate_argnums=(0,))
    data = jax.jit(make_data)
    fixed = data(jnp.uint32(0))

    holder = {"state": state}

    def run_full(i):
        holder["state"], m = full(holder["state"], rngs, jnp.uint32(i))
        return m["loss"]

    def run_network(i):
        holder["state"], m = network(holder["state"], rngs, jnp.uint32(i), fixed)
        return m["loss"]

    t_data = timed(lambda i: data(jnp.uint32(i)).images, args.repeat)
    t_net = timed(run_network, args.repeat)
    t_full = timed(run_full, args.repeat)

    dev = jax.devices()[0]
    print(
        f"\nTrain step (jax {jax.__version__}, {dev.platform}: {dev.device_kind}, "
        f"{os.cpu_count()} host cores, {platform.machine()}); planning {plan_s:.1f} s"
    )
    print(
        f"data: {maker.data.image_size_px} px images, batch {batch_size}, simulation "
        f"{maker.data.simulation} ({'multislice' if maker.geometry is not None else 'columns'}); "
        f"model: depth {mcfg.depth}, width {mcfg.width}, blocks {mcfg.blocks_per_level}"
    )
    print("\n| part | ms / step | images / s | share of full step |\n|---|---|---|---|")
    for name, t in (
        ("data generation (simulate + corrupt + targets)", t_data),
        ("network (forward + backward + AdamW)", t_net),
        ("full step (as trained)", t_full),
    ):
        print(f"| {name} | {1e3 * t:.1f} | {batch_size / t:.2f} | {100 * t / t_full:.0f} % |")


if __name__ == "__main__":
    main()
