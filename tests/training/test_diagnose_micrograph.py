"""experiments/wse2te/diagnose_micrograph.py: a variant changes only what it names, on top of
the unchanged draw (variants do not accumulate), and the corruption variant draws anew."""

import importlib.util
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from stemjax.config import load_config, to_runtime

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "wse2te" / "diagnose_micrograph.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("diagnose_micrograph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["diagnose_micrograph"] = module
    spec.loader.exec_module(module)
    return module


def test_variants_change_only_what_they_name(script, monkeypatch):
    import stemjax.trainingdata.pipeline as pipeline

    _, prior, _, _ = to_runtime(load_config(["data.prior=eval"]))
    key = jax.random.key(3)
    base, dose = script.SAMPLE_MICROSCOPE(key, prior)
    first = script._microscope_variant({"C10": 0.0, "dose": 2.0})
    mic, d = first(key, prior)
    assert float(mic.aberrations.C10) == 0.0 and float(d) == pytest.approx(2 * float(dose))
    assert float(mic.aberrations.C23) == float(base.aberrations.C23)
    # a later variant starts again from the draw, not from the previous variant, even while
    # the pipeline's draw is patched (as `main` patches it for each variant)
    monkeypatch.setattr(pipeline, "sample_microscope", first)
    mic, d = script._microscope_variant({"C23": 0.0})(key, prior)
    assert float(mic.aberrations.C10) == float(base.aberrations.C10) != 0.0
    assert float(mic.aberrations.C23) == 0.0 and float(d) == pytest.approx(float(dose))
    mic, _ = script._microscope_variant({"source_size": 0.3})(key, prior)
    assert float(mic.source_size) == 0.3 and float(mic.aberrations.C12) == float(
        base.aberrations.C12
    )


def test_other_corruption_uses_another_key(script, monkeypatch):
    seen = []
    monkeypatch.setattr(script, "CORRUPT", lambda k, *a, **kw: seen.append(k))
    key = jax.random.key(5)
    script._other_corruption(key, None)
    assert not np.array_equal(jax.random.key_data(seen[0]), jax.random.key_data(key))
