"""The two optax minimisers the calibration fits share: Adam on a cosine schedule, then L-BFGS.

Both take `loss(theta) -> scalar` over one flat parameter vector and run a jitted step in a
host loop (the loop stops early, so it cannot live inside one `lax` loop without a fixed count).
"""

import jax
import jax.numpy as jnp
import optax


def adam(loss, theta, steps: int, lr: float, *, final_fraction=0.05, frozen=None):
    """`steps` Adam updates (lr cosine-decayed to `final_fraction`·lr); entries where the boolean
    mask `frozen` is True do not move. Returns (theta, last loss)."""
    opt = optax.adam(optax.cosine_decay_schedule(lr, max(int(steps), 1), alpha=final_fraction))
    keep = None if frozen is None else jnp.asarray(~frozen, theta.dtype)
    value_and_grad = jax.value_and_grad(loss)

    @jax.jit
    def step(theta, state):
        value, grad = value_and_grad(theta)
        if keep is not None:
            grad = grad * keep
        updates, state = opt.update(grad, state, theta)
        return optax.apply_updates(theta, updates), state, value

    state, value = opt.init(theta), jnp.nan
    for _ in range(int(steps)):
        theta, state, value = step(theta, state)
    return theta, float(value)


def lbfgs(loss, theta, steps: int, tol: float):
    """L-BFGS (optax, zoom line search) until the loss changes by < `tol` over 5 iterations
    or `steps` iterations. Returns (theta, loss)."""
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    @jax.jit
    def step(theta, state):
        value, grad = value_and_grad(theta, state=state)
        updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=loss)
        return optax.apply_updates(theta, updates), state, value

    state, history = opt.init(theta), []
    for _ in range(int(steps)):
        theta, state, value = step(theta, state)
        history.append(float(value))
        if len(history) > 5 and abs(history[-6] - history[-1]) < tol:
            break
    return theta, float(jax.jit(loss)(theta))
