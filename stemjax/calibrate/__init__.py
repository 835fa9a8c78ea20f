"""Calibrate from the micrograph itself: fit lattice and microscope through the simulator.

`calibrate(image, pixel_size)` fits lattice origin, rotation, pixel size and scan distortion,
defocus, C12/φ12, C21/φ21, source size, dose, detector gain/offset/read noise and a smooth
background to a micrograph region of a known material, with uncertainties from the curvature
of the likelihood; `Calibration.to_microscope_config()` turns the fit into a `conf/microscope/`
prior; `refine_columns` measures the displacement field around a defect from its class average.
"""

from stemjax.calibrate.fit import Calibration, CalibrationError, FitOptions, calibrate
from stemjax.calibrate.lattice import LatticeNotFound, estimate_lattice
from stemjax.calibrate.model import PARAMETERS, UNITS, build_setup, column_responses
from stemjax.calibrate.synthetic import synthetic_micrograph

__all__ = [
    "PARAMETERS",
    "UNITS",
    "Calibration",
    "CalibrationError",
    "FitOptions",
    "LatticeNotFound",
    "build_setup",
    "calibrate",
    "column_responses",
    "estimate_lattice",
    "synthetic_micrograph",
]
