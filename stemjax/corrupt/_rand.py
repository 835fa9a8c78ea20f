"""One PRNG call per sampler: every `jax.random` call inlines its own threefry hash, and a dozen
of them dominate the compile time of `corrupt` on CPU."""

import math

import jax
import jax.numpy as jnp


def uniform_normal(key: jax.Array, n_uniform: int, normal_shape: tuple[int, ...] = ()):
    """(u, z): `n_uniform` draws of U(0, 1) and N(0, 1) draws of `normal_shape`, float32.

    One uniform draw on (−1, 1); normals as √2·erfinv(u), as `jax.random.normal` does.
    """
    n_normal = math.prod(normal_shape)
    lo = jnp.nextafter(jnp.float32(-1.0), jnp.float32(1.0))
    v = jax.random.uniform(key, (n_uniform + n_normal,), jnp.float32, lo, 1.0)
    u = 0.5 * (v[:n_uniform] + 1.0)
    z = jnp.sqrt(2.0).astype(jnp.float32) * jax.lax.erf_inv(v[n_uniform:])
    return u, z.reshape(normal_shape)


def in_range(u: jax.Array, lo, hi) -> jax.Array:
    """Map U(0, 1) draws to U(lo, hi); exactly lo when lo == hi."""
    return lo + (hi - lo) * u
