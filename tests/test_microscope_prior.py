"""Microscope priors: `conf/microscope/*.yaml` against the schema, sampling statistics, dose,
jit/vmap behaviour and the grid-planning bounds."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from stemjax.microscope_prior import (
    MicroscopePrior,
    MicroscopePriorConfig,
    ParamPrior,
    available_microscopes,
    conf_dir,
    load_microscope_prior,
    max_angles,
    mean_microscope,
    planning_microscope,
    required_potential_sampling,
    sample_microscope,
)
from stemjax.physics import Microscope, probe_fourier, wavelength
from stemjax.physics.adf import band_limit_angle_mrad

YAMLS = sorted((conf_dir() / "microscope").glob("*.yaml"))
N = 4000


def _schema():
    return OmegaConf.structured(MicroscopePriorConfig)


@pytest.fixture(scope="module")
def wse2te():
    return load_microscope_prior("wse2te")


@pytest.fixture(scope="module")
def wse2te_batch(wse2te):
    keys = jax.random.split(jax.random.key(0), N)
    return jax.jit(jax.vmap(sample_microscope, in_axes=(0, None)))(keys, wse2te)


def test_required_configs_present():
    assert {"wse2te", "mos2_60kv"} <= set(available_microscopes())


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.stem)
def test_every_yaml_fits_schema(path):
    cfg = OmegaConf.merge(_schema(), OmegaConf.load(path))
    assert cfg.name == path.stem
    prior = MicroscopePrior.from_config(cfg)
    assert prior == load_microscope_prior(path.stem)
    hash(prior)  # frozen and hashable: usable as a static jit argument


def test_unknown_key_is_named():
    with pytest.raises(ConfigKeyError, match="defocus_nm"):
        OmegaConf.merge(_schema(), {"defocus_nm": {"mean": 0.0}})
    with pytest.raises(ConfigKeyError, match="sdt"):
        OmegaConf.merge(_schema(), {"cs_angstrom": {"mean": 0.0, "sdt": 1.0}})
    with pytest.raises(ConfigKeyError, match="sdt"):
        MicroscopePrior.from_config({"cs_angstrom": {"sdt": 1.0}})


def test_wrong_type_raises():
    with pytest.raises(ValidationError):
        OmegaConf.merge(_schema(), {"pixel_size_angstrom": "small"})
    with pytest.raises(ValidationError):
        OmegaConf.merge(_schema(), {"energy_ev": 80e3})  # a scalar where a prior belongs


@pytest.mark.parametrize(
    "override, match",
    [
        ({"defocus_angstrom": {"dist": "gauss"}}, "defocus_angstrom.dist"),
        ({"defocus_angstrom": {"std": -1.0}}, "defocus_angstrom"),
        ({"semiangle_mrad": {"std": 0.5, "dist": "fixed"}}, "semiangle_mrad: std"),
        ({"phi12_rad": {"mean": -0.5, "dist": "fixed"}}, "phi12_rad: mean"),
        ({"dwell_time_us": {"dist": "uniform"}}, "dwell_time_us"),
        ({"detector_inner_mrad": {"mean": 250.0}}, "detector_inner_mrad"),
        ({"energy_ev": {"mean": 0.0}}, "energy_ev"),
    ],
)
def test_semantic_errors_name_the_field(override, match):
    with pytest.raises(ValueError, match=match):
        MicroscopePrior.from_config(override, source="test.yaml")


def test_sampled_statistics_match_config(wse2te, wse2te_batch):
    microscope, dose = wse2te_batch
    ab = microscope.aberrations
    checks = {
        "defocus_angstrom": -ab.C10,
        "c12_angstrom": ab.C12,
        "cs_angstrom": ab.C30,
        "source_size_angstrom": microscope.source_size,
    }
    for name, values in checks.items():
        p = getattr(wse2te, name)
        values = np.asarray(values, np.float64)
        assert values.shape == (N,)
        se_mean = p.std / math.sqrt(N)
        se_std = p.std / math.sqrt(2 * N)
        assert abs(values.mean() - p.mean) < 4 * se_mean, name
        assert abs(values.std() - p.std) < 4 * se_std, name
    # Azimuths uniform on [0, 2π): mean π, std 2π/√12.
    phi = np.asarray(ab.phi12, np.float64)
    assert phi.min() >= 0 and phi.max() < 2 * np.pi
    assert abs(phi.mean() - np.pi) < 4 * (2 * np.pi / math.sqrt(12 * N))
    # Fixed fields are exactly the published settings; unsampled aberrations are zero.
    assert np.all(np.asarray(microscope.energy) == 80e3)
    assert np.allclose(microscope.semiangle_cutoff, 25.2)
    assert np.all(np.asarray(ab.C32) == 0) and np.all(np.asarray(ab.C56) == 0)
    # Lognormal current around 30 pA × 20 µs: mean dose ≈ 3745 e⁻/px.
    d = np.asarray(dose, np.float64)
    assert abs(d.mean() - 3745.0) < 4 * d.std() / math.sqrt(N)


def test_dose_fixed_current_and_dwell():
    prior = MicroscopePrior.from_config(
        {
            "probe_current_pa": {"mean": 30.0, "dist": "fixed"},
            "dwell_time_us": {"mean": 20.0, "dist": "fixed"},
        }
    )
    _, dose = sample_microscope(jax.random.key(1), prior)
    assert float(dose) == pytest.approx(30e-12 * 20e-6 / 1.602176634e-19, rel=1e-6)
    assert float(dose) == pytest.approx(3745.0, abs=0.5)


def test_expected_values_and_the_mean_microscope():
    """`ParamDist.expected`: a uniform range's middle, else the mean; `mean_microscope` (the
    calibration's probe) uses it, so a uniform defocus prior starts at its middle, not at 0."""
    prior = MicroscopePrior.from_config(
        {
            "defocus_angstrom": {"low": 10.0, "high": 30.0, "std": 0.0, "dist": "uniform"},
            "dwell_time_us": {"low": 8.0, "high": 32.0, "std": 0.0, "dist": "uniform"},
            "probe_current_pa": {"mean": 20.0, "std": 5.0, "dist": "lognormal"},
        }
    )
    assert prior.dwell_time_us.expected() == pytest.approx(20.0)
    assert prior.probe_current_pa.expected() == pytest.approx(20.0)
    assert mean_microscope(prior).aberrations.C10 == pytest.approx(-20.0)  # C10 = −Δf


def test_positive_quantities_clipped():
    prior = MicroscopePrior.from_config(
        {
            "focal_spread_angstrom": {"mean": 0.0, "std": 5.0},
            "source_size_angstrom": {"mean": 0.0, "std": 1.0},
            "probe_current_pa": {"mean": 0.0, "std": 10.0},
        }
    )
    keys = jax.random.split(jax.random.key(2), 256)
    microscope, dose = jax.vmap(sample_microscope, in_axes=(0, None))(keys, prior)
    for values in (microscope.focal_spread, microscope.source_size, dose):
        assert np.all(np.asarray(values) >= 0)
    assert np.any(np.asarray(dose) == 0) and np.any(np.asarray(dose) > 0)


def test_jit_traces_once_and_vmaps(wse2te):
    traces = 0

    def draw(key):
        nonlocal traces
        traces += 1
        return sample_microscope(key, wse2te)

    jitted = jax.jit(draw)
    draws = [jitted(jax.random.key(i)) for i in range(3)]
    assert traces == 1
    assert float(draws[0][0].aberrations.C12) != float(draws[1][0].aberrations.C12)
    # Same key, same draw.
    assert float(jitted(jax.random.key(0))[1]) == float(draws[0][1])

    # The prior as a pytree argument: other numbers, same dists -> no retrace, new values.
    def draw_from(key, prior):
        nonlocal traces
        traces += 1
        return sample_microscope(key, prior)

    from_prior = jax.jit(draw_from)
    base, _ = from_prior(jax.random.key(0), wse2te)
    other = MicroscopePrior.from_config(
        OmegaConf.merge(
            OmegaConf.load(conf_dir() / "microscope" / "wse2te.yaml"),
            {"defocus_angstrom": {"std": 20.0}},
        )
    )
    wider, _ = from_prior(jax.random.key(0), other)
    assert traces == 2  # one trace each for `jitted` and `from_prior`
    assert float(wider.aberrations.C10) == pytest.approx(2 * float(base.aberrations.C10))

    keys = jax.random.split(jax.random.key(3), 5)
    batch, dose = jax.vmap(sample_microscope, in_axes=(0, None))(keys, wse2te)
    assert isinstance(batch, Microscope)
    assert all(leaf.shape == (5,) for leaf in jax.tree.leaves(batch))
    assert dose.shape == (5,)


def test_sampled_microscope_feeds_jitted_physics(wse2te):
    microscope, _ = sample_microscope(jax.random.key(4), wse2te)

    @jax.jit
    def probe_intensity(m: Microscope):
        lam = wavelength(m.energy)
        psi = probe_fourier((32, 32), (0.2, 0.2), lam, m.semiangle_cutoff, m.aberrations)
        return jnp.sum(jnp.abs(psi) ** 2)

    assert float(probe_intensity(microscope)) == pytest.approx(1.0, rel=1e-5)


def test_required_potential_sampling_wse2te(wse2te):
    sampling = required_potential_sampling(wse2te)
    lam = float(wavelength(80e3))
    assert lam == pytest.approx(0.04176, abs=1e-5)
    assert sampling <= 0.0696
    assert sampling == pytest.approx((2 / 3) * lam / (2 * 0.2), rel=1e-9)
    assert band_limit_angle_mrad((sampling, sampling), 80e3) >= 200.0 - 1e-9


@pytest.mark.parametrize("name", available_microscopes())
def test_max_angles_bound_every_draw(name):
    prior = load_microscope_prior(name)
    bounds = max_angles(prior)
    keys = jax.random.split(jax.random.key(5), N)
    microscope, _ = jax.jit(jax.vmap(sample_microscope, in_axes=(0, None)))(keys, prior)
    eps = 1e-4
    assert np.max(microscope.energy) <= bounds.energy_ev * (1 + eps)
    assert np.max(microscope.semiangle_cutoff) <= bounds.semiangle_mrad * (1 + eps)
    assert np.max(microscope.detector_outer) <= bounds.detector_outer_mrad * (1 + eps)
    assert np.all(np.asarray(microscope.detector_inner) < np.asarray(microscope.detector_outer))
    plan = planning_microscope(prior)
    for symbol in ("C10", "C12", "C21", "C23", "C30"):
        worst = np.max(np.abs(np.asarray(getattr(microscope.aberrations, symbol))))
        assert worst <= getattr(plan.aberrations, symbol) * (1 + eps), symbol


def test_mos2_60kv_samples_its_angles():
    prior = load_microscope_prior("mos2_60kv")
    assert max_angles(prior).semiangle_mrad == pytest.approx(32.0)
    assert required_potential_sampling(prior) == pytest.approx(
        (2 / 3) * float(wavelength(60e3)) / (2 * 0.21)
    )


def test_param_prior_defaults_are_plain_normal():
    p = ParamPrior(mean=1.0, std=2.0)
    assert (p.dist, p.low, p.high) == ("normal", None, None)
