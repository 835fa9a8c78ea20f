"""Column-response fast mode against exact multislice (stemjax.trainingdata.columns)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from stemjax.physics.adf import Microscope, adf_image, plan_geometry
from stemjax.physics.probe import Aberrations
from stemjax.specimen import build_layout, load_specimen_config, sample_specimen
from stemjax.trainingdata.columns import (
    column_types,
    precompute_column_responses,
    render_columns,
)

PIXEL = 0.2074
MICROSCOPE = Microscope(
    energy=80e3,
    semiangle_cutoff=25.2,
    detector_inner=63.0,
    detector_outer=200.0,
    aberrations=Aberrations(C10=-12.0, C12=15.0, phi12=0.7, C21=300.0),
)


def relrms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b**2)))


@pytest.fixture(scope="module")
def wse2():
    cfg = load_specimen_config("wse2te")
    n = 58
    layout = build_layout(cfg, (n * PIXEL, n * PIXEL), thermal=False)
    responses = precompute_column_responses(
        layout,
        MICROSCOPE,
        pixel_size=PIXEL,
        cell_extent=n * PIXEL,
        frozen_phonons=0,
        oversampling=4,
    )
    return cfg, layout, responses, n


def test_column_types_cover_every_class(wse2):
    _, layout, responses, _ = wse2
    types, type_of = column_types(layout)
    registry = layout.registry
    # W, Se2, 2Te (= 2TeW: same atoms), SeTe, SV, SeW, empty (DV = VW)
    assert len(types) == 7
    assert type_of.shape == (2, registry.num_classes)
    sub = registry.sublattices
    w, se2 = type_of[sub.index("metal"), 0], type_of[sub.index("chalcogen"), 0]
    assert types[w] == ((74, 0.0),) and len(types[se2]) == 2
    # DV and VW hold no atoms and share the empty type
    dv = type_of[sub.index("chalcogen"), registry.id("DV")]
    vw = type_of[sub.index("metal"), registry.id("VW")]
    assert dv == vw and types[dv] == ()
    te2 = type_of[sub.index("chalcogen"), registry.id("2Te")]
    assert te2 == type_of[sub.index("metal"), registry.id("2TeW")]
    assert responses.gram.shape[0] == len(types)


@pytest.mark.parametrize("element_class", [("metal", 0), ("chalcogen", "SeTe")])
def test_single_column_equals_multislice(wse2, element_class):
    """One column in a box the size of the response cell: the column image is exact multislice."""
    _, layout, responses, n = wse2
    registry = layout.registry
    s = registry.sublattices.index(element_class[0])
    c = element_class[1] if isinstance(element_class[1], int) else registry.id(element_class[1])
    nums = np.asarray(layout.content_numbers[s, c])
    zs = np.asarray(layout.content_z[s, c])[nums > 0] + 3.0
    nums = nums[nums > 0]
    xy = np.array([4.37, 7.91])  # sub-pixel position
    positions = np.concatenate([np.tile(xy, (len(nums), 1)), zs[:, None]], axis=1)
    box = n * PIXEL
    geometry = responses.geometry
    assert geometry.extent == (box, box)
    reference = adf_image(
        jnp.asarray(positions, jnp.float32),
        jnp.asarray(nums, jnp.int32),
        jnp.ones(len(nums), bool),
        MICROSCOPE.astype(jnp.float32),
        geometry,
    )
    site_type = jnp.asarray([responses.type_of[s, c]])
    image = render_columns(
        responses,
        MICROSCOPE.astype(jnp.float32),
        jnp.asarray([xy], jnp.float32),
        site_type,
        jnp.ones(1),
        (n, n),
    )
    reference = np.asarray(reference)
    assert np.unravel_index(np.argmax(image), image.shape) == np.unravel_index(
        np.argmax(reference), reference.shape
    )
    # Not bitwise: the phase grating exp(iσV) on a finite grid is not exactly shift-invariant
    # for sub-pixel atom positions (~0.3 %); a wrong shift, sign or scale gives O(1) errors.
    assert relrms(np.asarray(image), reference) < 5e-3


def test_masked_sites_contribute_nothing(wse2):
    _, layout, responses, n = wse2
    xy = jnp.asarray([[3.0, 3.0], [8.0, 6.0]], jnp.float32)
    types = jnp.asarray([0, 0])
    m = MICROSCOPE.astype(jnp.float32)
    both = render_columns(responses, m, xy, types, jnp.asarray([1.0, 1.0]), (n, n))
    first = render_columns(responses, m, xy[:1], types[:1], jnp.ones(1), (n, n))
    masked = render_columns(responses, m, xy, types, jnp.asarray([1.0, 0.0]), (n, n))
    np.testing.assert_allclose(masked, first, atol=1e-6)
    assert relrms(np.asarray(both), np.asarray(first)) > 0.3


def test_aberrations_change_the_response(wse2):
    _, layout, responses, n = wse2
    xy = jnp.asarray([[6.0, 6.0]], jnp.float32)
    m0 = MICROSCOPE.astype(jnp.float32)
    m1 = Microscope(**{**m0.__dict__, "aberrations": Aberrations(C10=-60.0)}).astype(jnp.float32)
    a = render_columns(responses, m0, xy, jnp.asarray([0]), jnp.ones(1), (n, n))
    b = render_columns(responses, m1, xy, jnp.asarray([0]), jnp.ones(1), (n, n))
    assert float(jnp.max(b)) < 0.9 * float(jnp.max(a))  # 60 Å defocus blurs the column


@pytest.mark.slow
def test_lattice_gap_to_multislice_is_small():
    """A defective WSe2 lattice: column mode within a few % of exact multislice (no phonons)."""
    cfg = load_specimen_config("wse2te")
    n = 68
    box = n * PIXEL
    layout = build_layout(cfg, (box, box), thermal=False)
    responses = precompute_column_responses(
        layout, MICROSCOPE, pixel_size=PIXEL, frozen_phonons=0, oversampling=4
    )
    spec = sample_specimen(jax.random.key(3), layout, "train")
    z = np.asarray(layout.content_z).reshape(-1) + 3.0
    nums = np.asarray(layout.content_numbers).reshape(-1)
    geometry = plan_geometry(
        (box, box),
        z[nums > 0],
        nums[nums > 0],
        MICROSCOPE,
        scan_sampling=PIXEL,
        cell_thickness=6.0,
        method="prism",
        oversampling=4,
    )
    pos = spec.positions + jnp.array([0.0, 0.0, 3.0])
    m = MICROSCOPE.astype(jnp.float32)
    reference = np.asarray(adf_image(pos, spec.numbers, spec.mask, m, geometry))
    site_type = responses.type_of[spec.site_sublattice, spec.site_class]
    image = np.asarray(
        render_columns(
            responses, m, spec.site_xy, site_type, spec.site_valid.astype(jnp.float32), (n, n)
        )
    )
    assert relrms(image, reference) < 0.03
    assert np.corrcoef(image.ravel(), reference.ravel())[0, 1] > 0.998
