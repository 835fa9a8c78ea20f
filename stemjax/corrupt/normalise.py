"""The one image normalisation shared by training (`corrupt`) and `predict` (real micrographs)."""

import jax.numpy as jnp
import numpy as np

#: IQR of a unit normal distribution: IQR / IQR_GAUSS is a robust standard deviation.
IQR_GAUSS = 1.3489795003921634


def normalise_image(img):
    """Robust standardisation over the last two axes: (img − median) / (IQR / 1.349).

    Why: detector gain/offset, dose and contamination level differ between micrographs; the
    median and interquartile range ignore the few brightest atoms and hot pixels. The result has
    zero median and unit robust spread (IQR / 1.349 = σ for Gaussian data), and is (to rounding)
    invariant to img → a·img + b (a > 0). A constant image maps to zeros.

    Works on NumPy arrays (returns NumPy, no device transfer: host-side `predict` on large
    micrographs) and on JAX arrays or tracers (jittable, returns jnp). Leading axes are a batch.
    Output dtype float32.
    """
    xp = np if isinstance(img, np.ndarray | np.generic) else jnp
    a = xp.asarray(img).astype(xp.float32)
    flat = a.reshape(a.shape[:-2] + (-1,))
    q25, q50, q75 = xp.quantile(flat, xp.asarray([0.25, 0.5, 0.75], xp.float32), axis=-1)
    spread = (q75 - q25) / IQR_GAUSS
    spread = xp.where(spread > 0, spread, 1.0)
    out = (a - q50[..., None, None]) / spread[..., None, None]
    return out.astype(xp.float32)
