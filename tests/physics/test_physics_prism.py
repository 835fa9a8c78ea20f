"""PRISM (S-matrix / detector Gram matrix) equals whole-cell multislice inside stemjax."""

import pytest
from physics_helpers import rel_rms

from stemjax import simulate_adf

pytestmark = pytest.mark.slow  # ~7-11 s: seven focal-spread nodes through multislice

ABERRATIONS = {"C10": 25.0, "C12": 20.0, "phi12": 0.4, "C21": 400.0, "phi21": 1.0,
               "C23": 300.0, "phi23": -0.3}


def test_prism_equals_multislice_with_aberrations_and_partial_coherence(wse2_1x1):
    kwargs = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0), scan_sampling=0.25,
                  aberrations=ABERRATIONS, focal_spread=30.0, source_size=0.3,
                  window_extent=100.0, interpolate=False)
    prism = simulate_adf(wse2_1x1, method="prism", **kwargs)
    multislice = simulate_adf(wse2_1x1, method="multislice", **kwargs)
    assert prism.shape == multislice.shape == (14, 23)
    assert rel_rms(prism, multislice) < 1e-3
    # The aberrations and partial coherence matter at this tolerance (so both paths apply them).
    plain = simulate_adf(wse2_1x1, method="prism", **{**kwargs, "aberrations": None})
    assert rel_rms(plain, prism) > 1e-2
    coherent = simulate_adf(wse2_1x1, method="prism",
                            **{**kwargs, "focal_spread": 0.0, "source_size": 0.0})
    assert rel_rms(coherent, prism) > 1e-2
