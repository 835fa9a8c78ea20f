"""predict(): tables, coordinates, tiling, resampling, file round trips and bad input, with a
fixture model (classical detection behind the model interface; see predict_helpers)."""

import tempfile

import numpy as np
import pandas as pd
import pytest
from predict_helpers import FixtureModel, synthetic_micrograph

from stemjax.evaluation import match_detections
from stemjax.io import MicrographError, write_tif
from stemjax.predict import DEFECT_COLUMNS, SITE_COLUMNS, TrainedModel, predict
from stemjax.specimen import load_specimen_config, prior_tables

PX = 0.2074


@pytest.fixture(scope="module")
def micrograph():
    return synthetic_micrograph(600, PX, n_defects=60, seed=1)


def _recall_precision(defects, truth, radius_A=0.8):
    pred = defects[["y_A", "x_A"]].to_numpy()
    gt = truth["xy_A"][:, ::-1]  # (y, x)
    m = match_detections(pred, gt, radius_A)
    tp = len(m.pred_index)
    correct = np.sum(defects["class_id"].to_numpy()[m.pred_index] == truth["class_id"][m.gt_index])
    return tp / len(gt), tp / max(len(pred), 1), correct / max(tp, 1), m


def test_table_recovers_known_defects_across_tiles(micrograph):
    image, truth = micrograph
    model = FixtureModel()
    # 600 px with 256-px tiles and 32-px margins: a 4×4 grid of cores, seams everywhere
    result = predict(model, image, pixel_size_A=PX, tile_px=256, margin_px=32, progress=False)
    d = result.defects
    assert list(d.columns) == list(DEFECT_COLUMNS) and list(result.sites.columns) == list(
        SITE_COLUMNS
    )
    recall, precision, class_acc, m = _recall_precision(d, truth)
    assert recall >= 0.98 and precision >= 0.98 and class_acc >= 0.98
    # localisation: x is the column axis, y the row axis, Å = px × pixel size
    err = np.hypot(
        d["x_A"].to_numpy()[m.pred_index] - truth["xy_A"][m.gt_index, 0],
        d["y_A"].to_numpy()[m.pred_index] - truth["xy_A"][m.gt_index, 1],
    )
    assert np.sqrt(np.mean(err**2)) < 0.15
    np.testing.assert_allclose(d["x_A"], d["x_px"] * PX, rtol=1e-5)
    assert set(d["class_name"]) <= {"2Te", "SeTe"} and set(d["sublattice"]) == {"chalcogen"}
    # no duplicates at tile seams
    xy = d[["x_A", "y_A"]].to_numpy()
    dist = np.hypot(*(xy[:, None] - xy[None]).transpose(2, 0, 1)) + np.eye(len(xy)) * 99
    assert dist.min() > 1.0
    # sites: every column of the field found once, split evenly between the sublattices
    n_sites = len(result.sites)
    expected = 2 * (600 * PX - 2.0) ** 2 / (3.297**2 * np.sqrt(3) / 2)
    assert abs(n_sites - expected) / expected < 0.06
    counts = result.sites["sublattice"].value_counts()
    assert abs(counts["metal"] - counts["chalcogen"]) / n_sites < 0.05
    conc = result.concentrations()
    assert conc.loc["SeTe", "count"] == (d["class_name"] == "SeTe").sum()
    assert conc.loc["SeTe", "n_sites"] == counts["chalcogen"]


def test_resampling_maps_positions_back_to_the_given_pixels(micrograph):
    """A micrograph at 0.16 Å/px is resampled to the model's 0.2074 Å/px and positions are
    reported in its own pixels."""
    px = 0.16
    image, truth = synthetic_micrograph(700, px, n_defects=40, seed=2)
    result = predict(FixtureModel(), image, pixel_size_A=px, tile_px=256, margin_px=32,
                     progress=False)  # fmt: skip
    d = result.defects
    recall, precision, _, m = _recall_precision(d, truth)
    assert recall >= 0.95 and precision >= 0.95
    np.testing.assert_allclose(d["x_A"], d["x_px"] * px, rtol=1e-5)
    assert result.fields.loc["image0", "pixel_size_A"] == px
    assert result.fields.loc["image0", "width_px"] == 700


def test_tif_and_npy_round_trip_give_the_same_table(tmp_path, micrograph):
    image, _ = micrograph
    tif = write_tif(tmp_path / "m.tif", image, PX)
    npy = tmp_path / "m.npy"
    np.save(npy, image)
    model = FixtureModel()
    kw = dict(tile_px=256, margin_px=32, progress=False)
    from_tif = predict(model, tif, **kw).defects
    from_npy = predict(model, npy, pixel_size_A=PX, **kw).defects
    assert len(from_tif) > 0 and set(from_tif["image_id"]) == {"m"}
    cols = ["x_px", "y_px", "class_id", "score"]
    np.testing.assert_allclose(from_tif[cols].to_numpy(float), from_npy[cols].to_numpy(float))


def test_bad_input_raises_clear_errors(tmp_path, micrograph):
    image, _ = micrograph
    model = FixtureModel()
    nan = image.copy()
    nan[3, 4] = np.nan
    with pytest.raises(MicrographError, match="NaN"):
        predict(model, nan, pixel_size_A=PX, progress=False)
    with pytest.raises(MicrographError, match="pixel_size_A"):
        predict(model, image, progress=False)  # array without pixel size
    with pytest.raises(MicrographError, match=r"model's"):
        predict(model, image, pixel_size_A=1.0, progress=False)  # 4.8× the model's
    np.save(tmp_path / "stack.npy", np.stack([image, image]))
    with pytest.raises(MicrographError, match="frame"):
        predict(model, tmp_path / "stack.npy", pixel_size_A=PX, progress=False)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MicrographError, match="notes.txt"):
        predict(model, tmp_path / "notes.txt", pixel_size_A=PX, progress=False)


@pytest.mark.parametrize("metal_amp", [1.0, 0.8])
def test_sublattices_from_geometry_not_brightness(metal_amp):
    """W and Se2 columns can be equally bright (or the metal dimmer): the honeycomb geometry
    still splits the sites, and the detected defects' classes name the halves."""
    from predict_helpers import honeycomb
    from scipy.spatial import cKDTree

    from stemjax.corrupt import normalise_image
    from stemjax.predict import assign_sublattices, find_columns

    image, truth = synthetic_micrograph(400, PX, n_defects=20, seed=3, metal_amp=metal_amp)
    pts, vals = find_columns(normalise_image(image), PX)
    brightness = {"metal": 74**1.7, "chalcogen": 2 * 34**1.7}
    defects_px = truth["xy_A"][:, ::-1] / PX  # (row, col); all on chalcogen sites
    sub = assign_sublattices(pts, vals, PX, brightness, defects_px, ["chalcogen"] * 20)
    metal, chalc = honeycomb(400 * PX)
    true_xy = np.concatenate([metal, chalc])[:, ::-1] / PX
    true_sub = np.array(["metal"] * len(metal) + ["chalcogen"] * len(chalc))
    dist, idx = cKDTree(true_xy).query(pts)
    assert np.mean(sub[dist < 2] == true_sub[idx[dist < 2]]) > 0.97


def test_edge_band_and_the_models_threshold():
    """Defects and sites within edge_A of the micrograph's edge are dropped from both tables
    (nothing else changes), and the model's decode_threshold (decode_threshold_tta with tta) is
    the default threshold."""
    image, _ = synthetic_micrograph(256, PX, n_defects=30, seed=4)
    kw = dict(pixel_size_A=PX, tile_px=256, margin_px=32, progress=False)
    model = FixtureModel()
    edge, hi = 3.0, (image.shape[0] - 1) * PX - 3.0
    full, cut = predict(model, image, edge_A=0.0, **kw), predict(model, image, edge_A=edge, **kw)
    for a, b in ((full.defects, cut.defects), (full.sites, cut.sites)):
        xy = a[["x_A", "y_A"]].to_numpy()
        inside = a[np.all((xy >= edge) & (xy <= hi), axis=1)]
        assert 0 < len(b) == len(inside) < len(a)
        np.testing.assert_allclose(np.sort(b["x_A"]), np.sort(inside["x_A"]), atol=1e-4)
    # per-nm² densities use the analysed box [edge, size − 1 − edge] Å, not the whole field
    assert cut.fields["edge_px"].iloc[0] == pytest.approx(edge / PX)
    area = cut.concentrations()["area_nm2"].iloc[0]
    assert area == pytest.approx((hi - edge) ** 2 / 100, rel=1e-6)
    assert full.concentrations()["area_nm2"].iloc[0] == pytest.approx((256 * PX) ** 2 / 100)
    model.decode_threshold = 1.0  # strict >: no peak passes (the fixture's reach p_def = 1)
    assert len(predict(model, image, **kw).defects) == 0
    # with test-time augmentation the default is decode_threshold_tta
    assert len(predict(model, image, tta=True, **kw).defects) > 0
    model.decode_threshold_tta = 1.0
    assert len(predict(model, image, tta=True, **kw).defects) == 0


def test_lattice_orientation_and_class_averages_in_the_lattice_frame():
    """fields.lattice_angle_deg is the metal → chalcogen bond direction (30° in the fixture's
    honeycomb, modulo 120°) and follows a 90° turn of the micrograph; class averages in the
    lattice frame of a micrograph and of its turned copy agree, in the image frame they do not."""
    from stemjax.analysis import class_averages

    image, _ = synthetic_micrograph(300, PX, n_defects=30, seed=5)
    turned = np.rot90(image)  # (row, col) → (W−1−col, row): directions turn by −90°
    result = predict(
        FixtureModel(), [image, turned], pixel_size_A=PX, image_ids=["a", "b"], progress=False
    )
    angle, coherence = result.fields["lattice_angle_deg"], result.fields["lattice_coherence"]
    assert angle["a"] == pytest.approx(30.0, abs=0.5)
    assert angle["b"] == pytest.approx((30.0 - 90.0) % 120.0, abs=0.5)
    assert (coherence > 0.9).all()

    name = result.defects["class_name"].iloc[0]

    def per_image(frame):
        rotation = {k: np.deg2rad(v) for k, v in angle.items()} if frame == "lattice" else None
        out = []
        for image_id in ("a", "b"):
            table = result.defects[result.defects["image_id"] == image_id]
            av = class_averages(result.images, table, refine_iterations=0, rotation_rad=rotation)
            assert av[name].count >= 5
            out.append(av[name].image)
        return out

    a, b = per_image("lattice")
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.95
    a, b = per_image("image")
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] < 0.8
    both = result.class_averages(refine_iterations=0)  # frame="lattice" by default
    assert sum(av.count for av in both.values()) > 0
    with pytest.raises(ValueError, match="'lattice' or 'image'"):
        result.class_averages(frame="sample")


def test_lattice_orientation_without_a_lattice():
    from stemjax.predict.sites import lattice_orientation

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 200, (400, 2))
    sub = np.where(rng.random(400) < 0.5, "metal", "chalcogen")
    angle, coherence = lattice_orientation(pts, sub, PX)
    assert coherence < 0.2 and np.isnan(angle)  # below MIN_LATTICE_COHERENCE: no angle
    angle, coherence = lattice_orientation(pts, np.full(400, "other"), PX)
    assert np.isnan(angle) and coherence == 0.0


def test_class_averages_in_the_lattice_frame_refuse_a_micrograph_without_a_lattice():
    """A field of noise has no orientation (NaN, low coherence): the lattice-frame average names
    it instead of rotating its crops by a meaningless angle; the image frame still works."""
    image, _ = synthetic_micrograph(200, PX, n_defects=10, seed=1)
    noise = np.random.default_rng(0).normal(size=(200, 200))
    result = predict(
        FixtureModel(), [image, noise], pixel_size_A=PX, image_ids=["a", "noise"], progress=False
    )
    assert np.isfinite(result.fields.loc["a", "lattice_angle_deg"])
    assert np.isnan(result.fields.loc["noise", "lattice_angle_deg"])
    assert result.fields.loc["noise", "lattice_coherence"] < 0.5
    assert (result.defects["image_id"] == "noise").any()  # the fixture detects one there
    with pytest.raises(ValueError, match="no finite angle for image 'noise'"):
        result.class_averages(refine_iterations=0)
    assert result.class_averages(frame="image", refine_iterations=0)


class ShiftableModel(FixtureModel):
    """FixtureModel with the real prior-shift offsets and defect scores that do not saturate
    (defect logit 8 at a disk centre, so a shift of a few units moves p_def)."""

    logit_offsets = TrainedModel.logit_offsets

    def __init__(self):
        super().__init__()
        self.site_priors = prior_tables(load_specimen_config("wse2te"), self.registry)
        self.train_prior, self.decode_prior, self.source = "train", None, "fixture"

    def logits(self, tiles):
        out = super().logits(tiles)
        out[..., 1:] -= 12.0
        return out


def test_site_prior_estimate_is_a_second_pass_at_the_first_pass_rates(micrograph, tmp_path):
    """'estimate' = predict at the training odds, take `site_rates` ((count + ½) / (sites + 1)
    per class) and predict again with them, from the same network output; 'eval' lowers the 2Te
    scores by its offset."""
    image, _ = micrograph
    model = ShiftableModel()
    kw = dict(pixel_size_A=PX, tile_px=256, margin_px=32, progress=False)
    first = predict(model, image, site_prior="train", **kw)
    rates, table = first.site_rates(), first.concentrations()
    assert set(rates) == set(model.registry.defect_names)
    for name, rate in rates.items():
        want = (table.loc[name, "count"] + 0.5) / (table.loc[name, "n_sites"] + 1)
        assert rate == pytest.approx(want) and rate > 0
    calls = []
    logits = model.logits
    model.logits = lambda tiles: calls.append(len(tiles)) or logits(tiles)
    again = predict(model, image, site_prior=rates, **kw)
    one_pass = len(calls)
    est = predict(model, image, site_prior="estimate", **kw)
    # estimate adds exactly one network pass (its logits are decoded twice), not two
    assert one_pass > 0 and len(calls) - one_pass == one_pass
    # the logit maps lived in memory-mapped files in a temporary folder, removed afterwards
    tempfile.tempdir = str(tmp_path)
    try:
        pd.testing.assert_frame_equal(predict(model, image, site_prior="estimate", **kw).defects,
                                      est.defects)  # fmt: skip
        pd.testing.assert_frame_equal(predict(model, image, site_prior=rates, **kw).defects,
                                      again.defects)  # fmt: skip
    finally:
        tempfile.tempdir = None
    assert list(tmp_path.iterdir()) == []
    cols = ["x_px", "y_px", "class_name", "score"]
    pd.testing.assert_frame_equal(est.defects[cols], again.defects[cols])
    model.decode_prior = "estimate"  # the model's default, as the shipped wse2te config sets
    pd.testing.assert_frame_equal(predict(model, image, **kw).defects[cols], est.defects[cols])
    # both passes see the inputs even when they come as a one-shot iterator
    once = predict(model, iter([image]), image_ids=["a"], **kw).defects[cols]
    pd.testing.assert_frame_equal(once, est.defects[cols])
    model.decode_prior = None
    assert not np.allclose(first.defects["score"], again.defects["score"], rtol=0, atol=1e-6)
    ev = predict(model, image, site_prior="eval", **kw).defects
    assert len(ev) == len(first.defects)

    def scores(d, name):
        return d["score"][d["class_name"] == name].to_numpy()

    # eval / train rates: 2Te 0.17× (logit −1.79), SeTe 1.66× (+0.50)
    assert len(scores(first.defects, "2Te")) > 0 and len(scores(first.defects, "SeTe")) > 0
    assert scores(ev, "2Te").max() < scores(first.defects, "2Te").min()
    assert scores(ev, "SeTe").min() > scores(first.defects, "SeTe").max()


def test_site_rates_refuse_more_defects_than_sites(micrograph):
    image, _ = micrograph
    result = predict(FixtureModel(), image, pixel_size_A=PX, tile_px=256, margin_px=32,
                     progress=False)  # fmt: skip
    n_chalcogen = int((result.sites["sublattice"] == "chalcogen").sum())
    extra = result.defects.iloc[[0] * n_chalcogen]  # one 2Te/SeTe detection repeated
    result.defects = pd.concat([result.defects, extra], ignore_index=True)
    with pytest.raises(ValueError, match="more defects than sites"):
        result.site_rates()


def test_a_full_temporary_disk_is_a_clear_error(micrograph, monkeypatch):
    """The logit map's disk space is reserved before it is written: no room is an OSError that
    names the folder and TMPDIR, not a crash while the map is filled."""
    import errno
    import os

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(OSError, match=r"no room for a .* MB logit map in .*TMPDIR"):
        predict(FixtureModel(), micrograph[0], pixel_size_A=PX, progress=False)
