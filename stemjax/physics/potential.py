"""Projected atomic potentials from published parametrizations, sliced and sampled on a grid.

The 2D Fourier transform of an atom's (infinitely) projected potential is
V̂_z(k) = 2π a0 e · f_e(|k|) (V·Å³), with f_e the electron scattering factor (Å) of the chosen
parametrization (Kirkland 2010, eq. 5.9). The slice potential is built exactly in Fourier space
as Σ_atoms f_e(k) exp(-2πi k·r_j) (a separable product of per-axis phase factors, i.e. one
matrix product per species and slice), so it is differentiable in the atom positions and free of
the interpolation error of splatting atoms onto pixels.
"""

import functools
import json
from dataclasses import dataclass
from importlib import resources

import jax.numpy as jnp
import numpy as np
from ase.data import chemical_symbols

from stemjax.physics.constants import SCATTERING_FACTOR_TO_POTENTIAL

PARAMETRIZATION_FILES = {"lobato": "lobato_2014.json", "kirkland": "kirkland_2010.json"}


@dataclass(frozen=True)
class Parametrization:
    """Coefficient table of one parametrization (see the JSON file for formula and citation)."""

    name: str
    citation: str
    coefficients: dict  # atomic number -> dict of coefficient name -> tuple of floats

    def supports(self, z: int) -> bool:
        return int(z) in self.coefficients

    def table(self, numbers) -> dict:
        """Stacked coefficients (n_species, n_terms) for the atomic numbers `numbers`.

        Raises ValueError naming any element without parameters.
        """
        missing = [int(z) for z in numbers if int(z) not in self.coefficients]
        if missing:
            names = ", ".join(
                f"{chemical_symbols[z] if 0 < z < len(chemical_symbols) else '?'} (Z={z})"
                for z in missing
            )
            raise ValueError(
                f"numbers: no {self.name} parameters for {names}; the {self.name} table covers "
                f"Z = {min(self.coefficients)}..{max(self.coefficients)}"
            )
        keys = self.coefficients[int(numbers[0])].keys()
        return {
            key: np.array([self.coefficients[int(z)][key] for z in numbers], dtype=np.float64)
            for key in keys
        }


@functools.cache
def load_parametrization(name: str = "lobato") -> Parametrization:
    """Load a parametrization table shipped in `stemjax/data` ('lobato' or 'kirkland')."""
    if name not in PARAMETRIZATION_FILES:
        raise ValueError(
            f"parametrization: unknown {name!r}; expected one of {sorted(PARAMETRIZATION_FILES)}"
        )
    text = resources.files("stemjax.data").joinpath(PARAMETRIZATION_FILES[name]).read_text()
    raw = json.loads(text)
    coefficients = {
        int(entry["Z"]): {k: tuple(v) for k, v in entry.items() if k != "Z"}
        for entry in raw["elements"].values()
    }
    return Parametrization(name=raw["name"], citation=raw["citation"], coefficients=coefficients)


def electron_scattering_factor(k2, coeffs: dict, name: str):
    """Electron scattering factor f_e (Å) at squared spatial frequency `k2` (1/Å²).

    `coeffs` holds arrays of shape (n_species, n_terms); the result has shape
    (n_species, *k2.shape).
    """
    k2 = jnp.asarray(k2)[None]
    expand = (...,) + (None,) * (k2.ndim - 1)
    if name == "lobato":
        a, b = (jnp.asarray(coeffs[key]) for key in ("a", "b"))
        f = 0.0
        for i in range(a.shape[1]):
            bk2 = b[:, i][expand] * k2
            f = f + a[:, i][expand] * (2.0 + bk2) / (1.0 + bk2) ** 2
        return f
    if name == "kirkland":
        a, b, c, d = (jnp.asarray(coeffs[key]) for key in ("a", "b", "c", "d"))
        f = 0.0
        for i in range(a.shape[1]):
            f = f + a[:, i][expand] / (k2 + b[:, i][expand])
            f = f + c[:, i][expand] * jnp.exp(-d[:, i][expand] * k2)
        return f
    raise ValueError(f"parametrization: unknown {name!r}")


def projected_scattering_factor(k2, coeffs: dict, name: str):
    """2D Fourier transform of the projected potential, V̂_z(k) (V·Å³), shape (n_species, ...)."""
    return SCATTERING_FACTOR_TO_POTENTIAL * electron_scattering_factor(k2, coeffs, name)


def projected_potential_radial(r, parametrization: Parametrization, z: int):
    """Analytic projected potential V_z(r) (V·Å) of one atom at radial distances `r` (Å).

    NumPy/SciPy reference (host only) used to check the gridded potentials:
    Lobato: V_z = 2πa0e Σ a_i [2π/b_i K0(2πr/√b_i) + 2π² r / b_i^{3/2} K1(2πr/√b_i)];
    Kirkland: V_z = 2πa0e Σ [2π a_i K0(2πr√b_i) + π c_i/d_i exp(-π² r²/d_i)].
    """
    from scipy.special import k0, k1

    r = np.asarray(r, dtype=np.float64)
    p = parametrization.table([z])
    if parametrization.name == "lobato":
        a, b = p["a"][0], p["b"][0]
        q = 2 * np.pi * r[..., None] / np.sqrt(b)
        terms = a * (2 * np.pi / b * k0(q) + 2 * np.pi**2 * r[..., None] / b**1.5 * k1(q))
    else:
        a, b, c, d = p["a"][0], p["b"][0], p["c"][0], p["d"][0]
        terms = 2 * np.pi * a * k0(2 * np.pi * r[..., None] * np.sqrt(b))
        terms = terms + np.pi * c / d * np.exp(-(np.pi**2) * r[..., None] ** 2 / d)
    return SCATTERING_FACTOR_TO_POTENTIAL * terms.sum(-1)


def fft_frequencies(gpts, sampling):
    """Spatial frequencies (1/Å) of an FFT grid with `gpts` points spaced `sampling` Å."""
    return tuple(np.fft.fftfreq(n, d) for n, d in zip(gpts, sampling, strict=True))


def slice_potentials(positions, species_onehot, slice_index, n_slices, form_factors, gpts, extent):
    """Projected potential of each slice on a periodic grid, V·Å, shape (n_slices, nx, ny).

    positions: (N, 2) Å in-plane atom positions; species_onehot: (N, S) weights (0 for masked
    atoms); slice_index: (N,) int slice of each atom; form_factors: (S, nx, ny) V̂_z (V·Å³) on the
    FFT grid. Exact structure factor: V̂_l(k) = Σ_s f_s(k) Σ_{j∈s,l} exp(-2πi k·r_j).
    """
    kx, ky = fft_frequencies(gpts, (extent[0] / gpts[0], extent[1] / gpts[1]))
    dtype = jnp.result_type(positions.dtype, jnp.complex64)
    ex = jnp.exp(-2j * jnp.pi * jnp.asarray(kx)[:, None] * positions[None, :, 0]).astype(dtype)
    ey = jnp.exp(-2j * jnp.pi * positions[:, 1, None] * jnp.asarray(ky)[None, :]).astype(dtype)
    slice_onehot = (slice_index[:, None] == jnp.arange(n_slices)[None, :]).astype(positions.dtype)
    weights = (species_onehot[:, :, None] * slice_onehot[:, None, :]).astype(dtype)  # (N, S, L)
    n_species = species_onehot.shape[1]
    ey_weighted = (weights[:, :, :, None] * ey[:, None, None, :]).reshape(ey.shape[0], -1)
    structure = (ex @ ey_weighted).reshape(len(kx), n_species, n_slices, len(ky))
    v_hat = jnp.einsum("xsly,sxy->lxy", structure, form_factors.astype(dtype))
    cell_area = extent[0] * extent[1]
    return jnp.fft.ifft2(v_hat).real * (gpts[0] * gpts[1] / cell_area)
