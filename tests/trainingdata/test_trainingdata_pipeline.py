"""make_batch: one jitted, on-device, deterministic `key → batch` per configuration."""

import dataclasses

import jax
import numpy as np
import pytest

from stemjax.config import load_config, to_runtime
from stemjax.microscope_prior import sample_microscope
from stemjax.physics import aberration_phase_rms, wavelength
from stemjax.trainingdata.pipeline import build_batch_maker


@pytest.fixture(scope="module")
def maker():
    specimen, prior, corruption, data = to_runtime(load_config(["data=small"]))
    return build_batch_maker(specimen, prior, corruption, data)


def test_batch_shapes_and_values(maker):
    # simulation=auto resolves to the column mode on a CPU (full multislice on an accelerator)
    if jax.default_backend() == "cpu":
        assert maker.data.simulation == "columns"
    batch = maker.make_batch(jax.random.key(0))
    b, h = maker.data.batch_size, maker.data.image_size_px
    assert batch.images.shape == (b, h, h) and batch.targets.shape == (b, h, h)
    assert batch.points.shape[0] == b and batch.points.shape[2] == 2
    assert np.all(np.isfinite(batch.images))
    # normalised like predict will normalise real images: median 0, robust spread 1
    assert abs(float(np.median(batch.images))) < 0.2
    assert np.asarray(batch.targets).max() < maker.registry.num_classes
    # every painted target pixel belongs to a defect label of that class within the disk radius
    r = maker.data.target_radius_px
    pix = np.stack(np.meshgrid(np.arange(h), np.arange(h), indexing="ij"), -1).reshape(-1, 2)
    for i in range(b):
        t = np.asarray(batch.targets[i]).reshape(-1)
        pts, cls = np.asarray(batch.points[i]), np.asarray(batch.classes[i])
        for k in set(np.unique(t)) - {0}:
            near = np.linalg.norm(pix[t == k][:, None] - pts[cls == k][None], axis=-1)
            assert np.all(near.min(axis=1) <= r + 1e-3)


def test_partly_visible_edge_defects_are_labelled(maker):
    """edge_targets paints the in-image part of defects centred just outside the image (their
    disk reaches in); without it only sites inside are painted. Images and labels are the same."""
    off = dataclasses.replace(maker, data=dataclasses.replace(maker.data, edge_targets=False))
    h, r = maker.data.image_size_px, maker.data.target_radius_px
    pix = np.stack(np.meshgrid(np.arange(h), np.arange(h), indexing="ij"), -1).reshape(-1, 2)
    n_edge = 0
    for seed in range(3):
        on_b = jax.device_get(maker.make_batch(jax.random.key(seed)))
        off_b = jax.device_get(off.make_batch(jax.random.key(seed)))
        np.testing.assert_array_equal(on_b.images, off_b.images)
        np.testing.assert_array_equal(on_b.valid, off_b.valid)
        for i in range(maker.data.batch_size):
            pts, cls, valid = on_b.points[i], on_b.classes[i], on_b.valid[i]
            d = np.linalg.norm(pix[:, None] - pts[None], axis=-1)  # (H*W, M) px
            inside = np.any((d <= r) & valid & (cls > 0), axis=1)
            edge = (d <= r) & ~valid & (cls > 0)
            t_on, t_off = on_b.targets[i].reshape(-1), off_b.targets[i].reshape(-1)
            np.testing.assert_array_equal(t_off > 0, inside)
            np.testing.assert_array_equal(t_on > 0, inside | edge.any(axis=1))
            only_edge = edge.any(axis=1) & ~inside
            n_edge += int(only_edge.sum())
            # those pixels carry the class of an outside defect that reaches them
            for p in np.flatnonzero(only_edge):
                assert t_on[p] in set(cls[edge[p]])
    assert n_edge > 0  # the draws do hold partly visible defects


def test_batch_records_the_microscope_draw(maker):
    """defocus (Å, = −C10), source size (1σ, Å), |C12| and |C23| (Å), the probe's rms
    aberration phase (rad) and dose are each image's own draw."""
    batch = jax.device_get(maker.make_batch(jax.random.key(0)))
    keys = jax.random.split(jax.random.key(0), maker.data.batch_size)
    for i, k in enumerate(keys):
        mic, _ = sample_microscope(jax.random.split(k, 3)[1], maker.microscope_prior)
        assert batch.defocus[i] == pytest.approx(-float(mic.aberrations.C10), abs=1e-5)
        assert batch.source_size[i] == pytest.approx(float(mic.source_size), abs=1e-6)
        assert batch.c12[i] == pytest.approx(abs(float(mic.aberrations.C12)), abs=1e-5)
        assert batch.c23[i] == pytest.approx(abs(float(mic.aberrations.C23)), rel=1e-6)
        rms = aberration_phase_rms(mic.semiangle_cutoff, wavelength(mic.energy), mic.aberrations)
        assert batch.phase_rms[i] == pytest.approx(float(rms), rel=1e-5)
        assert batch.phase_rms[i] > 0.0
        # the maker's own host-side view of example i's draw is the same draw
        same, dose = maker.microscope(jax.random.key(0), i)
        assert float(same.aberrations.C23) == float(mic.aberrations.C23)
        assert batch.dose[i] == pytest.approx(float(dose), rel=1e-5)
    assert len(set(np.round(batch.defocus, 4))) == maker.data.batch_size  # drawn per image
    assert batch.dose.shape == batch.defocus.shape == batch.source_size.shape


def test_jitted_once_and_deterministic(maker):
    traces = []
    fn = jax.jit(lambda k: (traces.append(1), maker._batch(k))[1])
    a = fn(jax.random.key(1))
    b = fn(jax.random.key(1))
    c = fn(jax.random.key(2))
    assert len(traces) == 1
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.targets, b.targets)
    assert not np.array_equal(a.points, c.points)
    assert not np.array_equal(a.classes, c.classes)


def test_make_batch_never_leaves_the_device(maker):
    key = jax.device_put(jax.random.key(3))
    maker.make_batch(key)  # compile outside the guard
    with jax.transfer_guard("disallow"):
        batch = maker.make_batch(key)
        jax.block_until_ready(batch)


def test_labels_sit_on_their_intensity_signature(maker):
    """After the drift warp, pristine W labels sit on bright peaks, vacancies on dark spots."""
    registry = maker.registry
    metal = registry.sublattices.index("metal")
    vw, dv = registry.id("VW"), registry.id("DV")
    bright, dark, offsets = [], [], []
    for seed in range(4):
        batch = jax.device_get(maker.make_batch(jax.random.key(100 + seed)))
        for i in range(batch.images.shape[0]):
            clean = batch.clean[i]
            pts, cls, sub, ok = (
                batch.points[i],
                batch.classes[i],
                batch.sublattice[i],
                batch.valid[i],
            )
            h = clean.shape[0]
            inner = ok & (pts >= 3).all(1) & (pts <= h - 4).all(1)
            rc = np.rint(pts).astype(int)
            value = clean[rc[:, 0].clip(0, h - 1), rc[:, 1].clip(0, h - 1)]
            w_sites = inner & (cls == 0) & (sub == metal)
            for r, c in rc[w_sites]:
                patch = clean[r - 2 : r + 3, c - 2 : c + 3]
                pr, pc = np.unravel_index(patch.argmax(), patch.shape)
                offsets.append(np.hypot(pr - 2, pc - 2))
            bright.extend(value[w_sites])
            dark.extend(value[inner & ((cls == vw) | (cls == dv))])
    assert len(offsets) > 20 and len(dark) > 0
    # the local maximum around each pristine-W label is at most one pixel away
    assert np.mean(np.asarray(offsets) <= 1.5) > 0.95
    assert np.median(dark) < 0.5 * np.median(bright)


@pytest.mark.parametrize(
    "override",
    [
        "specimen=wse2te",
        "specimen=mos2se",
        "specimen=ws2",
        "microscope=mos2_60kv",
        "corruption=none",
        "data=default",
        "data.target=gaussian",
        "data.simulation=multislice",
    ],
)
def test_every_config_composes(override):
    cfg = load_config([override])
    specimen, prior, corruption, data = to_runtime(cfg)
    assert specimen.name and prior.pixel_size_angstrom > 0 and data.image_size_px > 0


def test_unknown_key_fails_with_its_name(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "typo.yaml").write_text("image_size_px: 64\nnot_a_field: 3\n")
    with pytest.raises(Exception, match="not_a_field"):
        load_config([f"hydra.searchpath=[file://{tmp_path}]", "data=typo"])
    with pytest.raises(Exception, match="simulaton"):
        load_config(["data.simulaton=columns"])
    with pytest.raises(Exception, match="image_size_px"):
        load_config(["data.image_size_px=big"])


def test_bad_mode_is_a_clear_error():
    specimen, prior, corruption, data = to_runtime(
        load_config(["data=small", "data.simulation=fast"])
    )
    with pytest.raises(ValueError, match="data.simulation"):
        build_batch_maker(specimen, prior, corruption, data)
