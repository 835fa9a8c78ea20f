"""Probe: normalisation, Krivanek aberration phase term by term, and abTEM's probe (float64)."""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from stemjax.physics import Aberrations, aberration_phase, probe_fourier, wavelength

pytestmark = pytest.mark.usefixtures("enable_x64")

LAM = wavelength(80e3)
ALPHA = 0.021  # rad
PHI = 0.7  # rad
PI = np.pi

# (coefficients, closed-form χ(α, φ)) for each Krivanek term on its own, written out by hand.
SINGLE_TERMS = [
    ({"C10": 37.0}, PI / LAM * 37.0 * ALPHA**2),
    ({"C12": 25.0, "phi12": 0.3}, PI / LAM * 25.0 * ALPHA**2 * np.cos(2 * (PHI - 0.3))),
    ({"C21": 800.0, "phi21": -0.4}, 2 * PI / (3 * LAM) * 800.0 * ALPHA**3 * np.cos(PHI + 0.4)),
    ({"C23": 600.0, "phi23": 1.1}, 2 * PI / (3 * LAM) * 600.0 * ALPHA**3 * np.cos(3 * (PHI - 1.1))),
    ({"C30": 1.0e5}, PI / (2 * LAM) * 1.0e5 * ALPHA**4),
    ({"C32": 2.0e5, "phi32": 0.2}, PI / (2 * LAM) * 2.0e5 * ALPHA**4 * np.cos(2 * (PHI - 0.2))),
    ({"C34": 1.5e5, "phi34": 0.5}, PI / (2 * LAM) * 1.5e5 * ALPHA**4 * np.cos(4 * (PHI - 0.5))),
    ({"C41": 1e7, "phi41": 0.1}, 2 * PI / (5 * LAM) * 1e7 * ALPHA**5 * np.cos(PHI - 0.1)),
    ({"C43": 8e6, "phi43": 2.0}, 2 * PI / (5 * LAM) * 8e6 * ALPHA**5 * np.cos(3 * (PHI - 2.0))),
    ({"C45": 6e6, "phi45": -1.0}, 2 * PI / (5 * LAM) * 6e6 * ALPHA**5 * np.cos(5 * (PHI + 1.0))),
    ({"C50": 5e8}, PI / (3 * LAM) * 5e8 * ALPHA**6),
    ({"C52": 4e8, "phi52": 0.6}, PI / (3 * LAM) * 4e8 * ALPHA**6 * np.cos(2 * (PHI - 0.6))),
    ({"C54": 3e8, "phi54": 0.9}, PI / (3 * LAM) * 3e8 * ALPHA**6 * np.cos(4 * (PHI - 0.9))),
    ({"C56": 2e8, "phi56": 0.25}, PI / (3 * LAM) * 2e8 * ALPHA**6 * np.cos(6 * (PHI - 0.25))),
]


@pytest.mark.parametrize(
    ("coefficients", "expected"), SINGLE_TERMS, ids=[next(iter(c)) for c, _ in SINGLE_TERMS]
)
def test_aberration_phase_single_term(coefficients, expected):
    chi = aberration_phase(jnp.float64(ALPHA), jnp.float64(PHI), LAM, Aberrations(**coefficients))
    assert chi.dtype == jnp.float64
    assert float(chi) == pytest.approx(expected, rel=1e-12)
    assert abs(expected) > 0.1  # the chosen angle makes each term matter


def test_aberration_phase_is_additive_on_a_grid():
    alpha = jnp.linspace(0.0, 0.03, 7)[:, None]
    phi = jnp.linspace(-np.pi, np.pi, 9)[None, :]
    total = Aberrations()
    expected = 0.0
    for coefficients, _ in SINGLE_TERMS:
        total = dataclasses.replace(total, **coefficients)
        expected = expected + aberration_phase(alpha, phi, LAM, Aberrations(**coefficients))
    np.testing.assert_allclose(
        aberration_phase(alpha, phi, LAM, total), expected, rtol=1e-12, atol=1e-9
    )


def test_from_dict_aliases():
    ab = Aberrations.from_dict({"defocus": 50.0, "Cs": 1.2e4, "C12": 3.0, "phi12": 0.2})
    assert ab.C10 == -50.0 and ab.C30 == 1.2e4 and ab.C12 == 3.0 and ab.phi12 == 0.2
    with pytest.raises(ValueError, match="defocus"):
        Aberrations.from_dict({"defocus": 1.0, "C10": 1.0})


def _probe(gpts=(64, 48), sampling=(0.11, 0.13), **aberrations):
    return np.asarray(probe_fourier(gpts, sampling, LAM, 25.0, Aberrations(**aberrations)))


@pytest.mark.parametrize("rolloff", [0.0, 2.0])
def test_probe_normalised_in_both_spaces(rolloff):
    ab = Aberrations(C10=-40.0, C12=20.0, phi12=0.3, C23=300.0, C30=2e4)
    gpts = (64, 48)
    psi_k = np.asarray(probe_fourier(gpts, (0.11, 0.13), LAM, 25.0, ab, rolloff_mrad=rolloff))
    assert psi_k.dtype == np.complex128
    assert np.sum(np.abs(psi_k) ** 2) == pytest.approx(1.0, abs=1e-12)
    psi_r = np.fft.ifft2(psi_k)
    assert np.sum(np.abs(psi_r) ** 2) * psi_k.size == pytest.approx(1.0, abs=1e-12)


def test_probe_aperture_and_phase_sign():
    # ψ̂ = A(k) exp(−iχ): inside the aperture the phase is −χ; outside the cutoff it is zero.
    gpts, sampling = (64, 48), (0.11, 0.13)
    psi = _probe(gpts, sampling, C10=30.0, C12=10.0, phi12=0.4)
    kx = np.fft.fftfreq(gpts[0], sampling[0])[:, None]
    ky = np.fft.fftfreq(gpts[1], sampling[1])[None, :]
    alpha, phi = np.hypot(kx, ky) * LAM, np.arctan2(ky, kx)
    inside = alpha < 0.025 - 2 * LAM / (gpts[0] * sampling[0])
    chi = np.asarray(aberration_phase(alpha, phi, LAM, Aberrations(C10=30.0, C12=10.0, phi12=0.4)))
    ratio = psi[inside] / np.exp(-1j * chi[inside])
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-10)  # one real constant amplitude
    assert np.all(psi[alpha > 0.025 + LAM / min(gpts[0] * sampling[0], gpts[1] * sampling[1])] == 0)


def test_probe_matches_abtem_with_aberrations():
    """An independent probe: abTEM's Probe with the same Krivanek coefficients.

    Odd orders (C21, C23) make the probe non-centrosymmetric, so a sign or azimuth convention
    error (χ → −χ, φ → −φ, x ↔ y) lowers the overlap.
    """
    import abtem

    gpts, sampling = (96, 80), (0.1, 0.12)
    ab = dict(C10=30.0, C12=40.0, phi12=0.5, C21=500.0, phi21=1.1, C23=400.0, phi23=0.2, C30=2e4)
    ref = abtem.Probe(energy=80e3, semiangle_cutoff=25, gpts=gpts, sampling=sampling, **ab)
    ref = np.asarray(ref.build().compute(progress_bar=False).array, np.complex128)
    ref /= np.linalg.norm(ref)
    ours = np.fft.ifft2(_probe(gpts, sampling, **ab)) * np.sqrt(np.prod(gpts))
    ours = np.roll(ours, (gpts[0] // 2, gpts[1] // 2), axis=(0, 1))  # abTEM centres its probe
    assert np.linalg.norm(ours) == pytest.approx(1.0, abs=1e-12)
    assert abs(np.vdot(ours, ref)) == pytest.approx(1.0, abs=1e-5)
    # The test can fail: the mirror-image aberrations give a different probe.
    flipped = np.roll(np.fft.ifft2(np.conj(_probe(gpts, sampling, **ab))), (48, 40), (0, 1))
    assert abs(np.vdot(flipped / np.linalg.norm(flipped), ref)) < 0.9


ALPHA_MRAD = 25.2
K = 2 * PI / LAM * (ALPHA_MRAD * 1e-3)


@pytest.mark.parametrize(
    ("coefficients", "expected"),
    [
        ({"C10": 26.5}, K * 26.5 * ALPHA_MRAD * 1e-3 / (2 * np.sqrt(12))),
        ({"C12": 17.8, "phi12": 3.07}, K * 17.8 * ALPHA_MRAD * 1e-3 / (2 * np.sqrt(6))),
        ({"C23": 1597.0, "phi23": 0.4}, K * 1597.0 * (ALPHA_MRAD * 1e-3) ** 2 / (3 * np.sqrt(8))),
        # coma's best-fit tilt (2/3 r cos φ, a probe shift) is removed: r³ − 2r/3 has rms² 1/72
        ({"C21": 900.0, "phi21": -0.4}, K * 900.0 * (ALPHA_MRAD * 1e-3) ** 2 / (3 * np.sqrt(72))),
    ],
)
def test_aberration_phase_rms_closed_forms(coefficients, expected):
    from stemjax.physics import aberration_phase_rms

    got = aberration_phase_rms(ALPHA_MRAD, LAM, Aberrations(**coefficients))
    assert float(got) == pytest.approx(expected, rel=1e-9)


def test_aberration_phase_rms_matches_a_fine_grid():
    """Many terms at once against a dense Cartesian sampling of the aperture disc."""
    from stemjax.physics import aberration_phase_rms

    ab = Aberrations(C10=-12.0, C12=20.0, phi12=0.5, C21=2500.0, phi21=2.0, C23=900.0,
                     phi23=-0.3, C30=8000.0, C34=5e4, phi34=1.0, C45=2e6, phi45=0.2)  # fmt: skip
    a = ALPHA_MRAD * 1e-3
    x = (np.arange(1001) - 500) / 500.0
    gx, gy = np.meshgrid(x, x, indexing="ij")
    inside = gx**2 + gy**2 <= 1.0
    r, phi = np.hypot(gx, gy)[inside], np.arctan2(gy, gx)[inside]
    chi = np.asarray(aberration_phase(r * a, phi, LAM, ab))
    design = np.stack([np.ones_like(r), r * np.cos(phi), r * np.sin(phi)], 1)
    residual = chi - design @ np.linalg.lstsq(design, chi, rcond=None)[0]
    expected = np.sqrt(np.mean(residual**2))
    assert float(aberration_phase_rms(ALPHA_MRAD, LAM, ab)) == pytest.approx(expected, rel=2e-3)
    # the tilt removal matters here (coma): without it the rms is larger
    assert np.sqrt(np.mean((chi - chi.mean()) ** 2)) > 1.05 * expected
