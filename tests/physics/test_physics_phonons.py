"""Frozen phonons: averaged thermal configurations, reproducible by seed."""

import numpy as np
from physics_helpers import rel_rms

from stemjax import simulate_adf

KWARGS = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0), scan_sampling=0.25,
              potential_sampling=0.05)


def test_frozen_phonons_reproducible_by_seed(wse2_1x1):
    static = simulate_adf(wse2_1x1, **KWARGS)
    phonons = simulate_adf(wse2_1x1, frozen_phonons=4, seed=1, **KWARGS)
    again = simulate_adf(wse2_1x1, frozen_phonons=4, seed=1, **KWARGS)
    other = simulate_adf(wse2_1x1, frozen_phonons=4, seed=2, **KWARGS)
    assert phonons.shape == static.shape and phonons.dtype == static.dtype
    assert rel_rms(phonons, static) > 1e-2  # thermal smearing of the columns
    assert np.array_equal(phonons, again)
    assert rel_rms(other, phonons) > 1e-3
    # Thermal averaging blurs the peaks: the maximum drops, the mean signal stays close.
    assert phonons.max() < static.max()
    assert abs(phonons.mean() / static.mean() - 1) < 0.05


def test_single_configuration_is_not_the_static_lattice(wse2_1x1):
    one = simulate_adf(wse2_1x1, frozen_phonons=1, seed=3, **KWARGS)
    assert rel_rms(one, simulate_adf(wse2_1x1, **KWARGS)) > 1e-3
    assert np.all(np.isfinite(one)) and one.min() >= 0
