"""calibrate.optimize.Minimisers: optax's Adam (cosine schedule) and L-BFGS, compiled once per
objective and shape however many stages reuse them."""

import jax
import jax.numpy as jnp
import numpy as np
import optax

from stemjax.calibrate.optimize import Minimisers

TRACES = []


def _loss(theta, centre, weight):
    TRACES.append(1)  # runs only while tracing
    return jnp.sum(weight * (theta - centre) ** 2) + 0.1 * jnp.sum(theta**4)


def test_adam_is_optax_adam_with_a_cosine_schedule_and_frozen_entries():
    centre, weight = jnp.array([1.0, -2.0, 0.5]), jnp.array([1.0, 3.0, 0.5])
    frozen = np.array([False, True, False])
    got, _ = Minimisers().adam(_loss, jnp.zeros(3), 30, 0.1, args=(centre, weight),
                               final_fraction=0.05, frozen=frozen)  # fmt: skip
    opt = optax.adam(optax.cosine_decay_schedule(0.1, 30, alpha=0.05))
    theta, state = jnp.zeros(3), opt.init(jnp.zeros(3))
    for _ in range(30):
        grad = jax.grad(_loss)(theta, centre, weight) * jnp.asarray(~frozen, theta.dtype)
        updates, state = opt.update(grad, state, theta)
        theta = optax.apply_updates(theta, updates)
    np.testing.assert_allclose(got, theta, rtol=1e-5, atol=1e-6)
    assert got[1] == 0.0 and abs(float(got[0])) > 0.5  # frozen stays, the others moved


def test_stages_share_one_compilation_and_lbfgs_converges():
    mini = Minimisers()
    TRACES.clear()
    for c in (1.0, 2.0, -1.0):  # new data, same objective and shapes: no new trace
        mini.adam(_loss, jnp.zeros(2), 5, 0.1, args=(jnp.full(2, c), jnp.ones(2)))
    n_adam = len(TRACES)
    assert n_adam <= 2  # one value-and-grad trace (jax may trace the function once more)
    compiled = mini._lbfgs_step._cache_size()  # jax's cache, shared by every Minimisers
    for c in (1.0, 2.0):
        args = (jnp.full(2, c), jnp.ones(2))
        theta, _ = mini.lbfgs(_loss, jnp.zeros(2), 50, 1e-12, args=args)
        # stationary point of (t − c)² + 0.1 t⁴: 2(t − c) + 0.4 t³ = 0
        t = float(theta[0])
        assert abs(2 * (t - c) + 0.4 * t**3) < 1e-4
    n_lbfgs = len(TRACES) - n_adam
    mini.lbfgs(_loss, jnp.zeros(2), 50, 1e-12, args=(jnp.full(2, 5.0), jnp.ones(2)))
    assert len(TRACES) - n_adam == n_lbfgs  # the third L-BFGS stage traced nothing new
    # one new executable for every L-BFGS step (optax's initial state is weakly typed, its
    # updated state is not: without care the second step compiles again)
    assert mini._lbfgs_step._cache_size() == compiled + 1
