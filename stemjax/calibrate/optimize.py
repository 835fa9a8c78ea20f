"""The two optax minimisers the calibration fits share: Adam on a cosine schedule, then L-BFGS.

Both take `loss(theta, *args) -> scalar` over one flat parameter vector and run a jitted step in
a host loop (the loop stops early, so it cannot live inside one `lax` loop without a fixed
count). A `Minimisers` compiles each step once per loss function and argument shapes and reuses
it: a calibration runs a dozen Adam and L-BFGS stages on the same objective with different data
(start values, masks), and recompiling a float64 value-and-grad of the image model for each
stage cost more than the stages themselves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax

_ADAM = optax.scale_by_adam()
_LBFGS = optax.lbfgs()


def _adam_step(loss, theta, state, lr, keep, args):
    value, grad = jax.value_and_grad(loss)(theta, *args)
    updates, state = _ADAM.update(grad * keep, state, theta)
    return theta - lr * updates, state, value


def _lbfgs_step(loss, theta, state, args):
    def fn(t):
        return loss(t, *args)

    value, grad = optax.value_and_grad_from_state(fn)(theta, state=state)
    updates, state = _LBFGS.update(grad, state, theta, value=value, grad=grad, value_fn=fn)
    return optax.apply_updates(theta, updates), state, value


def _strong(tree):
    """`tree` with weak types made strong: optax's L-BFGS init holds weakly typed scalars that
    its update returns strongly typed, which would compile the step twice."""
    return jax.tree.map(lambda x: jnp.asarray(x, dtype=jnp.result_type(x)), tree)


def _value(loss, theta, args):
    return loss(theta, *args)


class Minimisers:
    """Adam and L-BFGS with their jitted steps cached per (loss, shapes) for this object's
    lifetime (make one per fit; the cache goes with it). `loss` must be the same function object
    across calls to share a compilation; pass what changes between stages through `args`."""

    def __init__(self):
        self._adam_step = jax.jit(_adam_step, static_argnums=0)
        self._lbfgs_step = jax.jit(_lbfgs_step, static_argnums=0)
        self._value = jax.jit(_value, static_argnums=0)

    def adam(self, loss, theta, steps: int, lr: float, *, args=(), final_fraction=0.05,
             frozen=None):  # fmt: skip
        """`steps` Adam updates (lr cosine-decayed to `final_fraction`·lr, as `optax.adam` with
        `optax.cosine_decay_schedule`); entries where the boolean mask `frozen` is True do not
        move. Returns (theta, last loss)."""
        steps = max(int(steps), 1)
        schedule = optax.cosine_decay_schedule(lr, steps, alpha=final_fraction)
        rates = np.asarray(schedule(np.arange(steps)), np.float64)
        keep = jnp.ones_like(theta) if frozen is None else jnp.asarray(~frozen, theta.dtype)
        state, value = _ADAM.init(theta), jnp.nan
        for rate in rates:
            theta, state, value = self._adam_step(loss, theta, state, rate, keep, tuple(args))
        return theta, float(value)

    def lbfgs(self, loss, theta, steps: int, tol: float, *, args=()):
        """L-BFGS (optax, zoom line search) until the loss changes by < `tol` over 5
        iterations or `steps` iterations. Returns (theta, loss)."""
        args = tuple(args)
        state, history = _strong(_LBFGS.init(theta)), []
        for _ in range(int(steps)):
            theta, state, value = self._lbfgs_step(loss, theta, state, args)
            history.append(float(value))
            if len(history) > 5 and abs(history[-6] - history[-1]) < tol:
                break
        return theta, float(self._value(loss, theta, args))
