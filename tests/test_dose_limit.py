"""The ideal-observer dose limit (experiments/wse2te/dose_limit.py): closed forms and cells."""

import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments" / "wse2te"))
import dose_limit  # noqa: E402


def test_detectability_matches_the_single_pixel_closed_form():
    # one pixel differs by δ: Poisson only, d' = D·δ / sqrt(D·Ī) = δ·sqrt(D / Ī)
    a = np.full((4, 4), 0.010)
    b = a.copy()
    b[1, 2] = 0.012
    mean = (0.010 + 0.012) / 2
    for dose in (10.0, 1000.0):
        want = 0.002 * math.sqrt(dose / mean)
        assert dose_limit.detectability(a, b, dose, 0.0) == pytest.approx(want, rel=1e-9)
    # counting limit: d' grows as √dose; read-out noise lowers it, most at low dose
    d1, d4 = (dose_limit.detectability(a, b, d, 0.0) for d in (100.0, 400.0))
    assert d4 == pytest.approx(2 * d1, rel=1e-9)
    with_read = dose_limit.detectability(a, b, 100.0, 3.0)
    want = 100 * 0.002 / math.sqrt(100 * mean + 9.0)
    assert with_read == pytest.approx(want, rel=1e-9) and with_read < d1


def test_dose_for_inverts_detectability_and_bayes_error_is_phi():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.005, 0.02, (8, 8))
    b = a * (1 + rng.normal(0, 0.05, a.shape))
    dose = dose_limit.dose_for(4.0, a, b, 3.0)
    assert dose_limit.detectability(a, b, dose, 3.0) == pytest.approx(4.0, rel=1e-6)
    assert dose_limit.bayes_error(0.0) == pytest.approx(0.5)
    assert dose_limit.bayes_error(2.0) == pytest.approx(0.158655254, rel=1e-6)  # Φ(−1)


@pytest.mark.parametrize(
    ("variant", "change"),
    [("SeTe", {"Se": -1, "Te": +1}), ("2Te", {"Se": -2, "Te": +2}), ("DV", {"Se": -2}),
     ("SeW", {"W": -1, "Se": +1}), ("VW", {"W": -1}), ("2TeW", {"W": -1, "Te": +2})],
)  # fmt: skip
def test_cells_change_one_column_by_the_specimen_config(variant, change):
    specimen, _, _ = dose_limit.configs()
    pristine = Counter(dose_limit.cell("pristine", specimen).get_chemical_symbols())
    assert pristine == {"W": 24, "Se": 48}  # 4 × 3 orthogonal cells of 2 WSe2 each
    got = Counter(dose_limit.cell(variant, specimen).get_chemical_symbols())
    got.subtract(pristine)
    assert {k: v for k, v in got.items() if v} == change
