"""Shared, small and fast column responses for the calibration tests (oversampling 2, static
lattice: self-consistent with the synthetic images, not converged physics)."""

import pytest

from stemjax.calibrate import column_responses
from stemjax.microscope_prior import load_microscope_prior, mean_microscope
from stemjax.specimen import load_specimen_config

PIXEL = 0.2074


@pytest.fixture(scope="session")
def specimen():
    return load_specimen_config("wse2te")


@pytest.fixture(scope="session")
def microscope():
    return mean_microscope(load_microscope_prior("wse2te"))


@pytest.fixture(scope="session")
def defect_responses(specimen, microscope):
    """Responses of the pristine columns and of SeTe, SV and VW at 0.2074 Å/px."""
    responses, _ = column_responses(
        specimen, microscope, PIXEL, classes=("SeTe", "SV", "VW"), frozen_phonons=0,
        oversampling=2,
    )  # fmt: skip
    return responses
