"""Bad input raises ValueError naming the parameter and what was expected."""

import ase
import ase.build
import jax.numpy as jnp
import numpy as np
import pytest
from physics_helpers import extent_of, wse2_orthogonal

from stemjax import simulate_adf
from stemjax.physics import Aberrations, Microscope, adf_image, load_parametrization, plan_geometry

GOOD = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0), scan_sampling=0.5)


def _simulate(atoms=None, **changes):
    return simulate_adf(wse2_orthogonal() if atoms is None else atoms, **{**GOOD, **changes})


def test_element_without_parameters():
    atoms = wse2_orthogonal()
    atoms.numbers = np.where(atoms.numbers == 74, 118, atoms.numbers)  # Og: beyond both tables
    with pytest.raises(ValueError, match=r"numbers.*Og"):
        _simulate(atoms)
    with pytest.raises(ValueError, match=r"numbers.*Og"):
        _simulate(atoms, parametrization="kirkland")


def test_detector_beyond_band_limit():
    # 0.05 Å potential pixels at 80 kV: 2/3 aperture at 278 mrad.
    with pytest.raises(ValueError, match=r"(?s)detector.*potential_sampling"):
        _simulate(detector=(60.0, 300.0), potential_sampling=0.05)
    with pytest.raises(ValueError, match=r"(?s)detector.*potential_sampling"):
        _simulate(detector=(60.0, 200.0), potential_sampling=0.1)


@pytest.mark.parametrize("detector", [(200.0, 60.0), (-1.0, 100.0), (60.0,), (10.0, 50.0, 90.0)])
def test_malformed_detector(detector):
    with pytest.raises(ValueError, match="detector"):
        _simulate(detector=detector)


def test_scalar_detector():
    """A single angle instead of (inner, outer) is a wrong shape too, not a TypeError."""
    with pytest.raises(ValueError, match="detector"):
        _simulate(detector=60.0)


def test_non_orthogonal_cell():
    hexagonal = ase.build.mx2("WSe2", a=3.297, thickness=3.34, vacuum=2)
    with pytest.raises(ValueError, match="orthogonal"):
        _simulate(hexagonal)


def test_non_periodic_cell():
    atoms = wse2_orthogonal()
    atoms.pbc = False
    with pytest.raises(ValueError, match="periodic"):
        _simulate(atoms)


@pytest.mark.parametrize("scan_sampling", [0.0, -0.2, np.nan, 6.0])
def test_bad_scan_sampling(scan_sampling):
    with pytest.raises(ValueError, match="scan_sampling"):
        _simulate(scan_sampling=scan_sampling)


@pytest.mark.parametrize("name", ["potential_sampling", "slice_thickness"])
def test_non_positive_lengths(name):
    with pytest.raises(ValueError, match=name):
        _simulate(**{name: 0.0})


@pytest.mark.parametrize("name", ["focal_spread", "source_size"])
def test_negative_coherence_parameters(name):
    with pytest.raises(ValueError, match=name):
        _simulate(**{name: -1.0})


def test_negative_frozen_phonons():
    with pytest.raises(ValueError, match="frozen_phonons"):
        _simulate(frozen_phonons=-1)


def test_unknown_aberration_key():
    with pytest.raises(ValueError, match=r"aberrations.*C11"):
        _simulate(aberrations={"C11": 10.0})
    with pytest.raises(ValueError, match="aberrations"):
        Aberrations.from_dict({"Cc": 1e7})


def test_unknown_parametrization():
    with pytest.raises(ValueError, match="parametrization"):
        _simulate(parametrization="doyle-turner")
    with pytest.raises(ValueError, match="parametrization"):
        load_parametrization("peng")


def test_bad_energy_and_semiangle():
    with pytest.raises(ValueError, match="energy"):
        _simulate(energy=0.0)
    with pytest.raises(ValueError, match="semiangle_cutoff"):
        _simulate(semiangle_cutoff=0.0)


def test_empty_cell():
    atoms = ase.Atoms(cell=[5.0, 5.0, 5.0], pbc=True)
    with pytest.raises(ValueError, match="atoms"):
        _simulate(atoms)


@pytest.fixture(scope="module")
def setup():
    atoms = wse2_orthogonal()
    microscope = Microscope(detector_inner=40.0, detector_outer=120.0)
    geometry = plan_geometry(extent_of(atoms), atoms.positions[:, 2], atoms.numbers, microscope,
                             potential_sampling=0.1, scan_sampling=0.5)
    return atoms, microscope, geometry


class TestArrayLevelShapes:

    def test_positions_must_be_n_by_3(self, setup):
        atoms, microscope, geometry = setup
        numbers, mask = np.asarray(atoms.numbers), np.ones(len(atoms), bool)
        with pytest.raises(ValueError, match=r"positions.*\(N, 3\)"):
            adf_image(jnp.asarray(atoms.positions[:, :2]), numbers, mask, microscope, geometry)
        with pytest.raises(ValueError, match="positions"):
            adf_image(jnp.asarray(atoms.positions.ravel()), numbers, mask, microscope, geometry)

    def test_numbers_and_mask_must_match_positions(self, setup):
        atoms, microscope, geometry = setup
        positions = jnp.asarray(atoms.positions)
        with pytest.raises(ValueError, match="numbers"):
            adf_image(positions, np.asarray(atoms.numbers[:-1]), np.ones(len(atoms), bool),
                      microscope, geometry)
        with pytest.raises(ValueError, match="mask"):
            adf_image(positions, np.asarray(atoms.numbers), np.ones(2, bool), microscope, geometry)

    def test_plan_geometry_checks(self, setup):
        atoms, microscope, _ = setup
        with pytest.raises(ValueError, match="extent"):
            plan_geometry((0.0, 5.0), [1.0], [74], microscope)
        with pytest.raises(ValueError, match="numbers"):
            plan_geometry((5.0, 5.0), [1.0, 2.0], [74], microscope)
        with pytest.raises(ValueError, match="scan_sampling"):
            plan_geometry((5.0, 5.0), [1.0], [74], microscope, scan_sampling=5.5)
