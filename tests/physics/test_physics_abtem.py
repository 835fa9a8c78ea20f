"""Against abTEM, an independent multislice code: WSe2 images and column peak ratios.

Reference: abTEM with the potential sampled at 0.0125 Å (converged). abTEM's own image at 0.05 Å
carries a ~4 % discretisation error from splatting atoms bilinearly onto the grid, whereas
stemjax builds the slice potential from the exact structure factor and is within 0.3 % of the
converged abTEM at 0.05 Å; `test_reference_choice_abtem_discretisation` pins that finding. (That
0.3 % holds for this cell's registry on the potential grid; with the atoms moved by whole scan
steps stemjax's default `oversampling=2` is 1-2 % off; see
`test_wse2_matches_abtem_at_another_registry`.)

abTEM's PRISM (`SMatrix`, interpolation 1) gives the same image as its probe scan (checked at
0.05 Å below, 3e-6 at 0.0125 Å) about 4× faster, so the 0.0125 Å references use it.
"""

import abtem
import ase.build
import numpy as np
import pytest
from physics_helpers import rel_rms, wse2_orthogonal

from stemjax import simulate_adf

pytestmark = pytest.mark.slow

SETTINGS = dict(energy=80e3, semiangle_cutoff=25.0, detector=(60.0, 200.0), scan_sampling=0.2,
                potential_sampling=0.05, slice_thickness=1.0)

# At 0.05 Å stemjax is ~1 % from the converged image at any atom registry (the wave's 2/3 band
# limit, 278 mrad, cuts multiple scattering through high angles); at 0.025 Å it is ~0.1 %.
FINE = {**SETTINGS, "potential_sampling": 0.025}


def abtem_adf(atoms, sampling, prism=True):
    potential = abtem.Potential(atoms, sampling=sampling, slice_thickness=1.0,
                                projection="infinite", parametrization="lobato")
    scan = abtem.GridScan(start=(0, 0), end=(1, 1), fractional=True, potential=potential,
                          sampling=0.2)
    detector = abtem.AnnularDetector(inner=60, outer=200)
    if prism:
        smatrix = abtem.SMatrix(potential=potential, energy=80e3, semiangle_cutoff=25,
                                interpolation=1)
        measurement = smatrix.scan(scan=scan, detectors=detector)
    else:
        probe = abtem.Probe(energy=80e3, semiangle_cutoff=25)
        measurement = probe.scan(potential, scan=scan, detectors=detector)
    return np.asarray(measurement.compute(progress_bar=False).array, np.float64)


def wse2_abtem_cell():
    return abtem.orthogonalize_cell(ase.build.mx2("WSe2", a=3.297, thickness=3.34, vacuum=2))


def defect_cell():
    """2×1 orthogonal WSe2 with one Se of one column replaced by Te and one Se removed from
    another: columns Se2 (pristine, two of them), SeTe, Se (single vacancy) and W."""
    atoms = wse2_orthogonal((2, 1))
    xy = atoms.positions[:, :2]
    numbers = atoms.numbers.copy()
    te_column = np.flatnonzero(np.linalg.norm(xy - [1.6485, 0.9518], axis=1) < 0.05)
    vacancy_column = np.flatnonzero(np.linalg.norm(xy - [3.297, 3.8070], axis=1) < 0.05)
    assert len(te_column) == 2 and len(vacancy_column) == 2
    numbers[te_column[0]] = 52
    atoms.numbers = numbers
    del atoms[int(vacancy_column[0])]
    return atoms


@pytest.fixture(scope="module")
def wse2_reference():
    atoms = wse2_abtem_cell()
    return atoms, abtem_adf(atoms, 0.0125)


@pytest.fixture(scope="module")
def defect_reference():
    atoms = defect_cell()
    return atoms, abtem_adf(atoms, 0.0125)


@pytest.fixture(scope="module")
def defect_images(defect_reference):
    atoms, _ = defect_reference
    return {m: simulate_adf(atoms, method=m, **FINE) for m in ("prism", "multislice")}


@pytest.mark.parametrize("method", ["prism", "multislice"])
def test_wse2_image_matches_abtem(wse2_reference, method):
    atoms, reference = wse2_reference
    image = simulate_adf(atoms, method=method, **FINE)
    assert image.shape == reference.shape == (17, 29)
    assert image.dtype == np.float32
    assert rel_rms(image, reference) < 1e-2
    assert np.corrcoef(image.ravel(), reference.ravel())[0, 1] > 0.999
    # Absolute scale: fraction of the incident beam, not just the contrast.
    assert image.mean() == pytest.approx(reference.mean(), rel=1e-2)



@pytest.mark.parametrize("k", [1, 2, 3])
def test_wse2_matches_abtem_at_another_registry(wse2_reference, k):
    """The same cell with every atom moved by k scan steps: the reference just rolls by k pixels.

    The < 1 % agreement must not depend on where the atoms sit relative to the potential grid
    (see test_physics_translation.py; before the potential taper, oversampling=2 gave 1.0 %,
    2.0 % and 1.7 % for k = 1, 2, 3 at 0.05 Å, against 0.3 % for the unshifted cell).
    """
    atoms, reference = wse2_reference
    shifted = atoms.copy()
    shifted.positions[:, :2] += k * np.diag(atoms.cell.array)[:2] / reference.shape
    shifted.wrap()
    image = simulate_adf(shifted, method="prism", **FINE)
    assert rel_rms(image, np.roll(reference, (k, k), axis=(0, 1))) < 1e-2

def test_reference_choice_abtem_discretisation(wse2_reference):
    """At 0.05 Å abTEM is > 3 % off its converged image, stemjax < 2 % (and 3× closer)."""
    atoms, reference = wse2_reference
    abtem_coarse = abtem_adf(atoms, 0.05, prism=False)
    ours = rel_rms(simulate_adf(atoms, method="prism", **SETTINGS), reference)
    assert rel_rms(abtem_coarse, reference) > 3e-2
    assert ours < 2e-2
    assert ours < rel_rms(abtem_coarse, reference) / 2.5
    # abTEM's two paths agree, so the PRISM reference stands for its probe scan.
    assert rel_rms(abtem_adf(atoms, 0.05, prism=True), abtem_coarse) < 1e-4


def columns(atoms):
    """Atomic columns {(x, y): sorted atomic numbers}, atoms grouped by (x, y) within 0.1 Å."""
    extent = np.diag(atoms.cell.array)[:2]
    found = []
    for xy, z in zip(atoms.positions[:, :2], atoms.numbers, strict=True):
        for column in found:
            d = (xy - column[0] + extent / 2) % extent - extent / 2
            if np.linalg.norm(d) < 0.1:
                column[1].append(int(z))
                break
        else:
            found.append((xy % extent, [int(z)]))
    return [(xy, tuple(sorted(zs))) for xy, zs in found]


def column_peaks(image, atoms, radius=0.4):
    """{column composition: [peak]} with the peak the image maximum within `radius` Å."""
    extent = np.diag(atoms.cell.array)[:2]
    nx, ny = image.shape
    x = np.arange(nx)[:, None] * extent[0] / nx
    y = np.arange(ny)[None, :] * extent[1] / ny
    peaks = {}
    for (cx, cy), zs in columns(atoms):
        dx = (x - cx + extent[0] / 2) % extent[0] - extent[0] / 2
        dy = (y - cy + extent[1] / 2) % extent[1] - extent[1] / 2
        near = np.hypot(dx, dy) < radius
        assert near.sum() >= 9
        peaks.setdefault(zs, []).append(float(image[near].max()))
    return peaks


def peak_ratios(image, atoms):
    peaks = column_peaks(image, atoms)
    assert sorted(peaks) == [(34,), (34, 34), (34, 52), (74,)]
    assert len(peaks[(34, 34)]) == 2 and len(peaks[(74,)]) == 4
    se2 = np.mean(peaks[(34, 34)])
    return {"SeTe/Se2": peaks[(34, 52)][0] / se2, "W/Se2": np.mean(peaks[(74,)]) / se2,
            "Se/Se2": peaks[(34,)][0] / se2}


@pytest.mark.parametrize("method", ["prism", "multislice"])
def test_column_peak_ratios_match_abtem(defect_reference, defect_images, method):
    atoms, reference = defect_reference
    image = defect_images[method]
    assert rel_rms(image, reference) < 1e-2
    ours, theirs = peak_ratios(image, atoms), peak_ratios(reference, atoms)
    for name in ("SeTe/Se2", "W/Se2", "Se/Se2"):
        assert ours[name] == pytest.approx(theirs[name], rel=1e-2), name
    # The ratios carry the defect contrast the classifier relies on; channelling makes a Se2
    # column brighter than two single Se atoms (DESIGN.md: by 15–30 %; 31 % here).
    for ratios in (ours, theirs):
        assert ratios["SeTe/Se2"] > 1.2
        assert 1.0 / (2.0 * ratios["Se/Se2"]) > 1.15

