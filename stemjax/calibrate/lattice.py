"""Starting geometry from the image itself: the first-order Bragg spots of the hexagonal lattice.

The six first-order spots of a hexagonal lattice of constant a lie at |g| = 2 / (√3 a) (1/Å).
In the image's power spectrum they sit at q = M⁻ᵀ g (cycles/px), with M the lattice → pixel map
of `stemjax.calibrate.model`; six measured spots give M by least squares. The honeycomb looks
the same after a 60° rotation about a hexagon centre with its two sublattices swapped, so the
rotation is found modulo 60° and the sublattice choice is left to the fit.
"""

from __future__ import annotations

import math

import numpy as np


class LatticeNotFound(ValueError):
    """The power spectrum shows no hexagonal lattice near the expected spacing."""


def reciprocal_first_order(a: float) -> np.ndarray:
    """(6, 2) first-order reciprocal vectors (1/Å) of a hexagonal lattice of constant a (Å)
    with a1 along x, sorted by angle from 0 (the lattice frame of `stemjax.specimen`)."""
    g = 2.0 / (math.sqrt(3.0) * a)
    angles = np.deg2rad(30.0 + 60.0 * np.arange(6))
    return g * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _peak(power: np.ndarray, q: np.ndarray, radius: float) -> tuple[np.ndarray, float]:
    """Strongest pixel of the (fftshifted) power spectrum within `radius` of q (cycles/px,
    centred), refined by a 3×3 centroid. Returns (q_refined, height)."""
    h, w = power.shape
    cy, cx = h // 2, w // 2
    r0, c0 = q[0] * h + cy, q[1] * w + cx
    rr, cc = np.mgrid[0:h, 0:w]
    sel = (rr - r0) ** 2 + (cc - c0) ** 2 <= radius**2
    if not sel.any():
        return q, 0.0
    masked = np.where(sel, power, -np.inf)
    i, j = np.unravel_index(np.argmax(masked), power.shape)
    win = power[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
    ri, ci = np.mgrid[max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2]
    wts = np.maximum(win - np.median(power), 0.0)
    if wts.sum() <= 0:
        return np.array([(i - cy) / h, (j - cx) / w]), float(power[i, j])
    ri = (ri * wts).sum() / wts.sum()
    ci = (ci * wts).sum() / wts.sum()
    return np.array([(ri - cy) / h, (ci - cx) / w]), float(power[i, j])


def estimate_lattice(
    image: np.ndarray, pixel_size: float, a: float, *, tolerance: float = 0.15
) -> dict[str, float]:
    """Pixel size (Å/px), rotation (rad, modulo 60°), stretch and shear from the Bragg spots.

    image: 2-D micrograph. pixel_size: nominal Å/px. a: lattice constant (Å). tolerance:
    relative range searched around the nominal spot radius (a pixel size off by up to ±15 %).
    Raises LatticeNotFound when no six-fold set of spots stands out of the background.
    """
    img = np.asarray(image, np.float64)
    h, w = img.shape
    window = np.hanning(h)[:, None] * np.hanning(w)[None, :]
    spec = np.fft.fftshift(np.abs(np.fft.fft2((img - img.mean()) * window)) ** 2)
    spec[h // 2, w // 2] = 0.0
    # expected spot radius in cycles/px; search an annulus in index units
    q0 = 2.0 / (math.sqrt(3.0) * a) * pixel_size
    fr = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fc = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    radius = np.hypot(fr, fc)
    ring = (radius > q0 * (1 - tolerance)) & (radius < q0 * (1 + tolerance))
    if not ring.any() or q0 * (1 + tolerance) >= 0.5:
        raise LatticeNotFound(
            f"lattice spots at {q0:.3f} cycles/px (a = {a} Å, {pixel_size} Å/px) are beyond "
            "the image's Nyquist frequency; check the pixel size"
        )
    masked = np.where(ring, spec, 0.0)
    i, j = np.unravel_index(np.argmax(masked), spec.shape)
    first = np.array([(i - h // 2) / h, (j - w // 2) / w])
    angle0 = math.atan2(first[1], first[0])
    search = max(2.0, 0.08 * q0 * min(h, w))
    spots, heights = [], []
    for k in range(6):
        ang = angle0 + k * math.pi / 3
        guess = np.hypot(*first) * np.array([math.cos(ang), math.sin(ang)])
        q, height = _peak(spec, guess, search)
        spots.append(q)
        heights.append(height)
    background = np.median(spec[ring])
    if min(heights) < 8.0 * background:
        raise LatticeNotFound(
            f"no six-fold set of lattice spots near {q0:.4f} cycles/px (a = {a} Å at "
            f"{pixel_size} Å/px): weakest spot only {min(heights) / background:.1f}× the ring's "
            "median power; check the material, the nominal pixel size and that the region shows "
            "a lattice"
        )
    q = np.asarray(spots)
    # q_k = X g_k with X = M^-T; the first spot is assigned to g_0 (rotation modulo 60°).
    g = reciprocal_first_order(a)
    x = np.linalg.lstsq(g, q, rcond=None)[0].T  # q ≈ g @ X^T
    m = np.linalg.inv(x).T
    return decompose(m)


def decompose(m: np.ndarray) -> dict[str, float]:
    """(pixel_size Å/px, rotation rad, stretch, shear) of M = (1/p) [[1+η, γ], [γ, 1−η]] R(θ)."""
    u, _, vt = np.linalg.svd(m)
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        raise LatticeNotFound(
            "the lattice appears mirrored (scan direction flipped); flip the image axis first"
        )
    sym = m @ rot.T
    sym = 0.5 * (sym + sym.T)
    p = 2.0 / np.trace(sym)
    return {
        "pixel_size_angstrom": float(p),
        "rotation_rad": float(math.atan2(rot[1, 0], rot[0, 0])),
        "stretch": float(0.5 * (sym[0, 0] - sym[1, 1]) * p),
        "shear": float(sym[0, 1] * p),
    }
