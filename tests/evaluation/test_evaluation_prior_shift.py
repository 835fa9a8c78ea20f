"""Prior-shift logit offsets: values against Bayes' rule, and the errors they raise."""

import numpy as np
import pytest

from stemjax.evaluation.prior_shift import prior_shift_offsets
from stemjax.specimen import DefectRegistry, concentration_table, load_specimen_config, prior_tables


@pytest.fixture(scope="module")
def wse2te():
    cfg = load_specimen_config("wse2te")
    registry = DefectRegistry.from_config(cfg)
    return cfg, registry, prior_tables(cfg, registry)


def test_offsets_are_log_concentration_ratios(wse2te):
    cfg, reg, tables = wse2te
    off = prior_shift_offsets(tables["train"], tables["eval"], list(reg.names))
    assert off.shape == (reg.num_classes,) and off.dtype == np.float32
    assert off[0] == 0.0  # background: unchanged
    for name in reg.defect_names:
        want = np.log(
            cfg.priors["eval"].concentrations[name] / cfg.priors["train"].concentrations[name]
        )
        assert off[reg.id(name)] == pytest.approx(want, rel=1e-6), name
    assert off[reg.id("VW")] == pytest.approx(np.log(0.00016 / 0.025), rel=1e-6)  # ≈ −5.05
    np.testing.assert_array_equal(prior_shift_offsets(tables["eval"], tables["eval"]), 0.0)


def test_shift_gives_the_bayes_posterior_of_the_target_prior():
    """A classifier that is exactly Bayes-optimal at the training prior (three classes on one
    site: none, A, B with Gaussian likelihoods), shifted to the target prior, equals the Bayes
    posterior computed directly at the target prior (background prior equal in both)."""
    # p(none) = 0.6 in both, so that the 0 offset of the background is exact
    train, target = np.array([[0.6, 0.2, 0.2]]), np.array([[0.6, 0.39, 0.01]])
    x = np.linspace(-4, 4, 41)[:, None]
    log_lik = -0.5 * (x - np.array([[0.0, 1.0, 1.5]])) ** 2
    logits_train = np.log(train[0]) + log_lik
    shifted = logits_train + prior_shift_offsets(train, target)
    log_post = np.log(target[0]) + log_lik

    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    np.testing.assert_allclose(softmax(shifted), softmax(log_post), rtol=1e-5)
    # B was 20× more common in training: its posterior must drop
    assert np.all(softmax(shifted)[:, 2] < softmax(logits_train)[:, 2])


def test_errors_name_the_class(wse2te):
    _, reg, tables = wse2te
    zero = concentration_table({"VW": 0.0, "SV": 0.01}, reg, "test")
    with pytest.raises(ValueError, match="2Te: target concentration 0"):
        prior_shift_offsets(tables["train"], zero, list(reg.names))
    with pytest.raises(ValueError, match="2Te: the training prior's concentration is 0"):
        prior_shift_offsets(zero, tables["eval"], list(reg.names))
    with pytest.raises(ValueError, match="same"):
        prior_shift_offsets(tables["train"], tables["train"][:, :3])
    with pytest.raises(ValueError, match=r"test: concentrations.XX: unknown defect class"):
        concentration_table({"XX": 0.1}, reg, "test")
