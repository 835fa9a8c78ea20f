"""Sublattice consistency: a defect's class must live on the sublattice its site sits on
(stemjax.predict.sites.site_sublattices, restrict_to_sublattice, and predict's use of them)."""

import numpy as np
from predict_helpers import FixtureModel, honeycomb, synthetic_micrograph

from stemjax.evaluation import match_detections
from stemjax.predict import predict
from stemjax.predict.sites import assign_sublattices, restrict_to_sublattice, site_sublattices
from stemjax.specimen import DefectRegistry, load_specimen_config

PX = 0.2074
REGISTRY = DefectRegistry.from_config(load_specimen_config("wse2te"))


def _lattice(extent_A=30.0):
    metal, chalc = honeycomb(extent_A)
    pts = np.concatenate([metal, chalc])[:, ::-1] / PX  # (row, col) px
    sub = np.array(["metal"] * len(metal) + ["chalcogen"] * len(chalc), dtype=object)
    return pts, sub


def test_site_sublattices_of_columns_and_of_vacancies():
    """Sites with a column and emptied sites (column removed) both get their own sublattice
    from the named neighbours; points with no neighbour within a bond are None."""
    pts, sub = _lattice()
    inner = np.flatnonzero(np.all((pts * PX > 4.0) & (pts * PX < 26.0), axis=1))
    order = []  # interior sites ≥ 4 Å apart, both kinds: vacancies without vacant neighbours
    for i in np.random.default_rng(0).permutation(inner):
        if all(np.hypot(*(pts[i] - pts[j])) * PX >= 4.0 for j in order):
            order.append(i)
    order = np.array(order)
    assert len(order) >= 12 and set(sub[order]) == {"metal", "chalcogen"}
    np.testing.assert_array_equal(site_sublattices(pts[order], pts, sub, PX), sub[order])
    keep = np.ones(len(pts), bool)
    keep[order] = False  # the queried columns removed: vacancies
    got = site_sublattices(pts[order], pts[keep], sub[keep], PX)
    np.testing.assert_array_equal(got, sub[order])
    # names swapped on the columns → the answer swaps: it comes from the neighbours' names
    swapped = np.where(sub == "metal", "chalcogen", "metal").astype(object)
    got = site_sublattices(pts[order], pts, swapped, PX)
    np.testing.assert_array_equal(got, swapped[order])
    # one neighbour found, or neighbours that disagree: unknown (a stray or misnamed column)
    centre = order[0]
    bonded = np.flatnonzero(np.abs(np.hypot(*(pts - pts[centre]).T) * PX - 1.9) < 0.2)
    assert len(bonded) == 3
    lone = np.ones(len(pts), bool)
    lone[[centre, *bonded[1:]]] = False
    assert site_sublattices(pts[[centre]], pts[lone], sub[lone], PX)[0] is None
    split = sub.copy()
    split[bonded[0]] = sub[centre]
    assert site_sublattices(pts[[centre]], pts, split, PX)[0] is None
    # far from every column (and an empty column list): unknown
    assert site_sublattices(np.array([[-100.0, -100.0]]), pts, sub, PX)[0] is None
    assert site_sublattices(pts[:3], np.zeros((0, 2)), [], PX).tolist() == [None] * 3


def test_vacancies_name_the_sublattices_from_their_own_sites():
    """Vacancies have no column: the nearest column to a vacancy is a neighbour on the other
    sublattice. The halves are named by each defect's own site (its bond neighbours), so a field
    whose defects are all vacancies still gets the right names (it came out swapped when each
    defect voted with its nearest column)."""
    pts, sub = _lattice(40.0)
    rng = np.random.default_rng(1)
    vacant = []
    for i in rng.permutation(np.flatnonzero(sub == "chalcogen")):
        if all(np.hypot(*(pts[i] - pts[j])) * PX >= 5.0 for j in vacant):
            vacant.append(i)
    keep = np.ones(len(pts), bool)
    keep[vacant] = False
    brightness = {"metal": 74**1.7, "chalcogen": 2 * 34**1.7}
    values = np.where(sub[keep] == "metal", 0.9, 1.0)  # the metal dimmer: brightness would swap
    got = assign_sublattices(
        pts[keep], values, PX, brightness, pts[vacant], ["chalcogen"] * len(vacant)
    )
    assert len(vacant) >= 10
    np.testing.assert_array_equal(got, sub[keep])


def test_restrict_to_sublattice_picks_the_best_class_of_the_site():
    k = REGISTRY.num_classes - 1
    probs = np.full((4, k), 0.01)
    i = {name: REGISTRY.id(name) for name in REGISTRY.defect_names}
    probs[0, i["2TeW"] - 1], probs[0, i["2Te"] - 1] = 0.6, 0.3  # metal class on a chalcogen site
    probs[1, i["SV"] - 1], probs[1, i["SeW"] - 1], probs[1, i["VW"] - 1] = 0.5, 0.2, 0.25
    probs[2, i["SeTe"] - 1] = 0.9  # consistent: unchanged
    probs[3, i["SeW"] - 1], probs[3, i["SV"] - 1] = 0.7, 0.2  # unknown site: unchanged
    classes = np.argmax(probs, 1) + 1
    site = np.array(["chalcogen", "metal", "chalcogen", None], dtype=object)
    got = restrict_to_sublattice(classes, probs, site, REGISTRY)
    assert got.tolist() == [i["2Te"], i["VW"], i["SeTe"], i["SeW"]]
    assert classes.tolist() == [i["2TeW"], i["SV"], i["SeTe"], i["SeW"]]  # input not modified
    assert len(restrict_to_sublattice(np.zeros(0, int), np.zeros((0, k)), [], REGISTRY)) == 0


class SwappingModel(FixtureModel):
    """The fixture model, but every 2Te (id 1) it sees it calls 2TeW (a metal-site class),
    with 2Te its second choice: the sublattice confusion the shipped model shows at strong
    underfocus and low dose."""

    def logits(self, tiles):
        out = super().logits(tiles)
        two_te, two_te_w = REGISTRY.id("2Te"), REGISTRY.id("2TeW")
        called = out[..., two_te] > 0
        out[..., two_te_w][called] = out[..., two_te][called] + 1.0
        return out


def test_predict_moves_defects_to_the_class_of_their_sublattice():
    image, truth = synthetic_micrograph(400, PX, n_defects=30, seed=6)
    n_2te = int(np.sum(truth["class_id"] == 1))
    # the network is right about the majority (SeTe), so the sublattice names come out right
    assert 5 <= n_2te < len(truth["class_id"]) / 2
    kw = dict(pixel_size_A=PX, tile_px=256, margin_px=32, progress=False)
    results = {
        c: predict(SwappingModel(), image, sublattice_consistent=c, **kw) for c in (False, True)
    }
    for consistent, result in results.items():
        d = result.defects
        m = match_detections(d[["y_A", "x_A"]].to_numpy(), truth["xy_A"][:, ::-1], 0.8)
        assert len(m.pred_index) >= 0.95 * len(truth["class_id"])
        got = d["class_id"].to_numpy()[m.pred_index]
        want = truth["class_id"][m.gt_index]
        if consistent:
            np.testing.assert_array_equal(got, want)
            assert set(d["sublattice"]) == {"chalcogen"}
            # the network's own call stays in the table: exactly the moved rows differ
            moved = d["class_name"] != d["network_class_name"]
            assert set(d.loc[moved, "network_class_name"]) == {"2TeW"}
            assert set(d.loc[moved, "class_name"]) == {"2Te"} and moved.sum() >= 5
        else:  # the raw network output: every 2Te is on the wrong sublattice
            assert np.all(got[want == 1] == REGISTRY.id("2TeW"))
            assert (d["class_name"] == d["network_class_name"]).all()


def test_cli_raw_classes_turns_the_step_off(tmp_path, monkeypatch):
    import stemjax.predict as api
    from stemjax.predict.__main__ import main as cli

    seen = []

    def fake_predict(model, images, **kwargs):
        seen.append(kwargs["sublattice_consistent"])
        raise api.ModelLoadError("stop here")  # the CLI reports it and returns 2

    monkeypatch.setattr(api, "load_model", lambda *a, **k: None)
    monkeypatch.setattr(api, "predict", fake_predict)
    base = ["run", "a.tif", "--out", str(tmp_path / "o")]
    assert cli(base) == 2 and cli([*base, "--raw-classes"]) == 2
    assert seen == [True, False]
