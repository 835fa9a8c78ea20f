"""experiments/wse2te/diagnose_micrograph.py: a variant (a `BatchMaker` subclass) changes only
what it names and keeps every other random draw; the corruption variant draws anew."""

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from stemjax.config import load_config, to_runtime
from stemjax.trainingdata.pipeline import build_batch_maker

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "wse2te" / "diagnose_micrograph.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("diagnose_micrograph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["diagnose_micrograph"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def base():
    return build_batch_maker(*to_runtime(load_config(["data=small", "data.prior=eval"])))


def test_variants_change_only_what_they_name(script, base):
    key = jax.random.key(3)
    drawn, dose = base.microscope(key)
    first = script.VariantMaker.of(base, change={"C10": 0.0, "dose": 2.0})
    mic, d = first.microscope(key)
    assert float(mic.aberrations.C10) == 0.0 and float(d) == pytest.approx(2 * float(dose))
    assert float(mic.aberrations.C23) == float(drawn.aberrations.C23)
    # each variant starts again from the base draw, not from the previous variant
    mic, d = script.VariantMaker.of(base, change={"C23": 0.0}).microscope(key)
    assert float(mic.aberrations.C10) == float(drawn.aberrations.C10) != 0.0
    assert float(mic.aberrations.C23) == 0.0 and float(d) == pytest.approx(float(dose))
    mic, _ = script.VariantMaker.of(base, change={"source_size": 0.3}).microscope(key)
    assert float(mic.source_size) == 0.3
    assert float(mic.aberrations.C12) == float(drawn.aberrations.C12)


def test_variant_batches_keep_the_other_draws(script, base):
    key = jax.random.key(5)
    ref = jax.device_get(base.make_batch(key))
    same = jax.device_get(script.VariantMaker.of(base).make_batch(key))
    np.testing.assert_array_equal(same.images, ref.images)  # no change: the same images
    other = jax.device_get(script.VariantMaker.of(base, other_corruption=True).make_batch(key))
    np.testing.assert_array_equal(other.classes, ref.classes)  # same specimen and microscope
    np.testing.assert_array_equal(other.defocus, ref.defocus)
    assert not np.allclose(other.images, ref.images)  # new noise, drift and background
    k_spec, k_mic, k_cor = base.example_keys(key)
    o_spec, o_mic, o_cor = script.VariantMaker.of(base, other_corruption=True).example_keys(key)
    assert np.array_equal(jax.random.key_data(o_mic), jax.random.key_data(k_mic))
    assert not np.array_equal(jax.random.key_data(o_cor), jax.random.key_data(k_cor))
