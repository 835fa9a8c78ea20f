"""Orbax checkpoints of the training state: the ONLY module that calls orbax (its API moves).

A checkpoint is one PyTree item per step: {"model": nnx.state(model) (RNG streams excluded: the
trainer reseeds them from (seed, step)), "opt": nnx.state(optimizer) (optax state and its step
counter), "ema": EMA parameters or absent}, saved with `StandardSave` and restored with
`StandardRestore` against the freshly initialised state as target, so shapes, dtypes and the
nnx.State structure come back exactly. Preservation keeps the latest `keep` steps plus the best
step by a validation metric (passed to `save` as `metrics` on evaluation steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as ocm


def _abstract(leaf):
    """ShapeDtypeStruct of `leaf` with its sharding, or the first local device if it has none."""
    sharding = getattr(leaf, "sharding", None)
    if not isinstance(sharding, jax.sharding.Sharding):  # none, or orbax's metadata of one
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding)


class Checkpointer:
    """Thin wrapper of `ocp.CheckpointManager` for the trainer.

    directory: where step folders go (created). keep: how many latest steps to keep.
    best_metric: key of the metrics dict that ranks checkpoints (higher is better, `best_mode`
    'max'; default the trainer's validation F1), kept in addition to the latest `keep`; None
    keeps only the latest.
    """

    def __init__(
        self,
        directory: str | Path,
        keep: int = 3,
        best_metric: str | None = "val_f1",
        best_mode: str = "max",
    ):
        self.directory = Path(directory).absolute()
        self.best_metric = best_metric
        policies = [ocm.LatestN(n=max(int(keep), 1))]
        best_fn = None
        if best_metric is not None:

            def best_fn(m):
                return float(m.get(best_metric, float("-inf")))

            policies.append(
                ocm.BestN(
                    get_metric_fn=best_fn,
                    reverse=best_mode == "min",
                    n=1,
                    keep_checkpoints_without_metrics=False,
                )
            )
        options = ocp.CheckpointManagerOptions(
            preservation_policy=ocm.AnyPreservationPolicy(policies=policies),
            # best_fn too: orbax writes the metrics file only when it tracks a best step
            best_fn=best_fn,
            best_mode=best_mode,
            keep_checkpoints_without_metrics=True,
            create=True,
            enable_async_checkpointing=False,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    # ----- queries ---------------------------------------------------------------------------
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def best_step(self) -> int | None:
        """Step with the best `best_metric` among saved steps that logged it (None if none)."""
        if self.best_metric is None:
            return self.latest_step()
        best, best_value = None, None
        for step in self.all_steps():
            metrics = self.metrics(step)
            if not metrics or self.best_metric not in metrics:
                continue
            value = float(metrics[self.best_metric])
            if best_value is None or value > best_value:
                best, best_value = step, value
        return best

    def metrics(self, step: int) -> dict | None:
        """The metrics saved with `step` (None when it was saved without)."""
        return self._manager.metrics(step)

    # ----- save / restore --------------------------------------------------------------------
    def save(self, step: int, state: Any, metrics: dict[str, float] | None = None) -> None:
        """Save the PyTree `state` at `step` (synchronously), with optional scalar metrics."""
        clean = None if metrics is None else {k: float(v) for k, v in metrics.items()}
        self._manager.save(int(step), args=ocp.args.StandardSave(state), metrics=clean, force=True)
        self._manager.wait_until_finished()

    def restore(self, target: Any, step: int | None = None) -> tuple[int, Any]:
        """(step, state) restored at `step` (default: latest) into the structure of `target`.

        target: a PyTree like the saved one (arrays or ShapeDtypeStructs). Leaves restore with
        the target's sharding; leaves without one (NumPy arrays, plain ShapeDtypeStructs) go to
        the first local device, so a checkpoint written on N devices loads on any machine.
        """
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(_abstract, target)
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return step, restored

    def _metadata_tree(self, step: int):
        # the item's own handler: a StandardCheckpointer would also look for step metadata
        # inside the item folder and log a spurious "Metadata file does not exist" warning
        handler = ocp.PyTreeCheckpointHandler()
        try:
            return handler.metadata(self.directory / str(step) / "default").tree
        finally:
            handler.close()

    def item_keys(self, step: int) -> list[str]:
        """Top-level keys of the state saved at `step` (e.g. ['ema', 'model', 'opt'])."""
        return sorted(self._metadata_tree(int(step)))

    def restore_raw(self, step: int | None = None) -> tuple[int, Any]:
        """(step, nested dict of arrays) at `step` (default latest) without a target: structure,
        shapes and dtypes from the checkpoint's metadata, arrays on the first local device
        (whatever device mesh wrote them). For inspection and tests."""
        step = self.latest_step() if step is None else int(step)
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(_abstract, self._metadata_tree(step))
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        return step, restored

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
