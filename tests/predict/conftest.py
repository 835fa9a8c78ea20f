"""Run directories with (untrained) tiny U-Nets, as `python -m stemjax.train` writes them."""

import pytest
from predict_helpers import make_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def local_run(tmp_path_factory):
    """Without normalisation layers the tiny U-Net is a local operator (receptive field ±30 px)."""
    return make_run(tmp_path_factory.mktemp("run_local"), ["model.norm=none"])
