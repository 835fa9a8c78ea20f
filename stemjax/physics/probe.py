"""Probe wave function: soft-edged aperture and aberration phase in Krivanek polar notation."""

from dataclasses import dataclass, fields

import jax
import jax.numpy as jnp
import numpy as np

#: Krivanek coefficients C_nm (Å) and their azimuths φ_nm (rad), up to 5th order.
#: C10 = −defocus (positive C10 is underfocus in this sign convention), C30 = Cs.
ABERRATION_SYMBOLS = (
    "C10", "C12", "phi12",
    "C21", "phi21", "C23", "phi23",
    "C30", "C32", "phi32", "C34", "phi34",
    "C41", "phi41", "C43", "phi43", "C45", "phi45",
    "C50", "C52", "phi52", "C54", "phi54", "C56", "phi56",
)  # fmt: skip


@jax.tree_util.register_dataclass
@dataclass(frozen=True)
class Aberrations:
    """Aberration coefficients in Krivanek notation: C_nm in Å, φ_nm in rad (a JAX pytree).

    χ(α, φ) = 2π/λ Σ_nm C_nm α^{n+1} cos(m (φ − φ_nm)) / (n + 1), α in rad.
    """

    C10: float = 0.0
    C12: float = 0.0
    phi12: float = 0.0
    C21: float = 0.0
    phi21: float = 0.0
    C23: float = 0.0
    phi23: float = 0.0
    C30: float = 0.0
    C32: float = 0.0
    phi32: float = 0.0
    C34: float = 0.0
    phi34: float = 0.0
    C41: float = 0.0
    phi41: float = 0.0
    C43: float = 0.0
    phi43: float = 0.0
    C45: float = 0.0
    phi45: float = 0.0
    C50: float = 0.0
    C52: float = 0.0
    phi52: float = 0.0
    C54: float = 0.0
    phi54: float = 0.0
    C56: float = 0.0
    phi56: float = 0.0

    @classmethod
    def from_dict(cls, values: dict | None) -> "Aberrations":
        """Build from a dict; accepts 'defocus' (Å, = −C10) and 'Cs' (Å, = C30) aliases."""
        values = dict(values or {})
        if "defocus" in values:
            if "C10" in values:
                raise ValueError("aberrations: give either 'defocus' or 'C10', not both")
            values["C10"] = -float(values.pop("defocus"))
        if "Cs" in values:
            if "C30" in values:
                raise ValueError("aberrations: give either 'Cs' or 'C30', not both")
            values["C30"] = values.pop("Cs")
        unknown = sorted(set(values) - set(ABERRATION_SYMBOLS))
        if unknown:
            raise ValueError(
                f"aberrations: unknown key(s) {unknown}; expected Krivanek symbols "
                f"{', '.join(ABERRATION_SYMBOLS)} (C in Å, phi in rad) or 'defocus'/'Cs'"
            )
        return cls(**{k: float(v) for k, v in values.items()})

    def astype(self, dtype) -> "Aberrations":
        return Aberrations(
            **{f.name: jnp.asarray(getattr(self, f.name), dtype) for f in fields(self)}
        )


#: (n, m) orders with a coefficient C_nm; m = 0 terms have no azimuth.
ABERRATION_ORDERS = (
    (1, 0), (1, 2), (2, 1), (2, 3), (3, 0), (3, 2), (3, 4),
    (4, 1), (4, 3), (4, 5), (5, 0), (5, 2), (5, 4), (5, 6),
)  # fmt: skip


def aberration_phase(alpha, phi, wavelength_angstrom, aberrations: Aberrations):
    """Aberration phase χ (rad) at scattering angle `alpha` (rad) and azimuth `phi` (rad)."""
    chi = 0.0
    for n, m in ABERRATION_ORDERS:
        c = getattr(aberrations, f"C{n}{m}")
        term = c * alpha ** (n + 1) / (n + 1)
        if m:
            term = term * jnp.cos(m * (phi - getattr(aberrations, f"phi{n}{m}")))
        chi = chi + term
    return 2.0 * jnp.pi / wavelength_angstrom * chi


def aberration_phase_rms(semiangle_mrad, wavelength_angstrom, aberrations: Aberrations):
    """RMS aberration phase (rad) over the probe-forming aperture, piston and tilt removed.

    The wavefront error that blurs the probe: χ averaged over the uniformly filled disc α ≤
    semiangle, less its mean (piston) and its least-squares tilt (a tilt only shifts the probe).
    Maréchal: peak intensity ≈ exp(−rms²) of the aberration-free probe's; rms ≲ 0.45 rad
    (λ/14) is a well-tuned probe. Closed forms: defocus (2π/λ)·|C10|α²/(2√12), two-fold
    (2π/λ)·|C12|α²/(2√6), three-fold (2π/λ)·|C23|α³/(3√8). Exact for every order up to C56
    (Gauss–Legendre in the radius, 32 equally spaced azimuths).
    """
    r, w = np.polynomial.legendre.leggauss(8)
    r, w = 0.5 * (r + 1.0), 0.5 * w  # nodes and weights on [0, 1]
    phi = np.arange(32) * (2.0 * np.pi / 32)
    rr, pp = r[:, None], phi[None, :]
    weight = jnp.asarray(2.0 * w[:, None] * rr / 32)  # Σ weight = 1: the disc's mean
    alpha = rr * (jnp.asarray(semiangle_mrad) * 1e-3)
    chi = aberration_phase(alpha, pp, wavelength_angstrom, aberrations)
    tilt_x, tilt_y = rr * np.cos(pp), rr * np.sin(pp)  # ⟨tilt²⟩ = 1/4 on the unit disc
    chi = chi - jnp.sum(weight * chi)
    b_x, b_y = jnp.sum(weight * chi * tilt_x), jnp.sum(weight * chi * tilt_y)
    chi = chi - 4.0 * (b_x * tilt_x + b_y * tilt_y)
    return jnp.sqrt(jnp.sum(weight * chi**2))


def soft_aperture(alpha, phi, semiangle_rad, angular_sampling_rad, rolloff_rad=0.0):
    """Aperture transmission with an antialiased edge.

    With rolloff_rad = 0 the edge is one reciprocal pixel wide (a hard aperture sampled without
    staircase aliasing); with rolloff_rad > 0 a cosine taper of that width (rad) ends at the
    semiangle cutoff.
    """
    step = jnp.sqrt(
        (jnp.cos(phi) * angular_sampling_rad[0]) ** 2
        + (jnp.sin(phi) * angular_sampling_rad[1]) ** 2
    )
    pixel_edge = jnp.clip((semiangle_rad - alpha) / step + 0.5, 0.0, 1.0)
    safe_rolloff = jnp.maximum(rolloff_rad, 1e-12)
    x = jnp.clip((semiangle_rad - alpha) / safe_rolloff, 0.0, 1.0)
    tapered = 0.5 * (1.0 - jnp.cos(jnp.pi * x))
    return jnp.where(rolloff_rad > 0.0, tapered, pixel_edge)


def angular_grid(gpts, sampling, wavelength_angstrom):
    """Scattering angle α (rad) and azimuth φ (rad) on an FFT grid (`sampling` in Å)."""
    kx = jnp.fft.fftfreq(gpts[0], sampling[0])
    ky = jnp.fft.fftfreq(gpts[1], sampling[1])
    kx, ky = kx[:, None], ky[None, :]
    alpha = jnp.sqrt(kx**2 + ky**2) * wavelength_angstrom
    phi = jnp.arctan2(ky, kx)
    return alpha, phi


def probe_fourier(
    gpts,
    sampling,
    wavelength_angstrom,
    semiangle_mrad,
    aberrations,
    rolloff_mrad=0.0,
    dtype=None,
    edge_extent=None,
):
    """Probe in Fourier space, A(k) exp(−iχ(k)), normalised so Σ_k |ψ̂(k)|² = 1.

    With numpy's FFT convention, ψ(r) = ifft2(ψ̂) · sqrt(N) then has Σ_r |ψ(r)|² = 1.
    edge_extent (Å, Å): the cell whose reciprocal pixel sets the width of the antialiased
    aperture edge (default: this grid). A probe window smaller than the cell passes the cell's
    extent so that it samples the same aperture as a whole-cell probe.
    """
    alpha, phi = angular_grid(gpts, sampling, wavelength_angstrom)
    if edge_extent is None:
        edge_extent = (gpts[0] * sampling[0], gpts[1] * sampling[1])
    angular_sampling = (
        wavelength_angstrom / edge_extent[0],
        wavelength_angstrom / edge_extent[1],
    )
    aperture = soft_aperture(
        alpha, phi, semiangle_mrad * 1e-3, angular_sampling, rolloff_mrad * 1e-3
    )
    chi = aberration_phase(alpha, phi, wavelength_angstrom, aberrations)
    psi = aperture * jnp.exp(-1j * chi)
    if dtype is not None:
        psi = psi.astype(dtype)
    return psi / jnp.sqrt(jnp.sum(jnp.abs(psi) ** 2))
