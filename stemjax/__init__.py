"""stemjax: differentiable multislice ADF-STEM in JAX, and defect detection trained on it.

Public surface: `simulate_adf` (user level, ase.Atoms in, NumPy image out) and the array-level
physics in `stemjax.physics` (`adf_image`, `plan_geometry`, `Microscope`, `Aberrations`).
"""

from stemjax.physics import Aberrations, Microscope, adf_image, plan_geometry
from stemjax.simulate import simulate_adf

__all__ = ["Aberrations", "Microscope", "adf_image", "plan_geometry", "simulate_adf"]
