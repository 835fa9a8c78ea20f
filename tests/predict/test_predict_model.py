"""load_model from run directories, tiled vs untiled inference with a real U-Net, the CLI."""

import json
import shutil

import jax
import numpy as np
import pytest
from omegaconf import OmegaConf
from predict_helpers import synthetic_micrograph

from stemjax.corrupt import normalise_image
from stemjax.evaluation import decode_defects
from stemjax.io import write_tif
from stemjax.predict import ModelLoadError, export_model, load_model, predict, predict_tiles
from stemjax.predict.__main__ import main as cli

PX = 0.2074


@pytest.fixture(scope="module")
def model(tiny_run):
    return load_model(tiny_run)


def test_load_model_from_run_dir_and_step_dir(tiny_run, model):
    assert model.step == 4  # best by val_f1, not the latest (8)
    assert model.registry.defect_names == ("2Te", "SeTe", "SV", "DV", "2TeW", "SeW", "VW")
    assert model.pixel_size_A == pytest.approx(PX) and model.downsample_factor == 4
    assert load_model(tiny_run, which="latest").step == 8
    assert load_model(tiny_run / "checkpoints" / "8").step == 8
    logits = model.logits(np.zeros((1, 32, 32), np.float32))
    assert logits.shape == (1, 32, 32, 8) and np.all(np.isfinite(np.asarray(logits)))


def test_load_model_from_a_multirun_job_folder(tmp_path, tiny_run):
    """Hydra numbers multirun jobs (multirun/<date>/<time>/0): a job folder is a run directory,
    not a checkpoints/<step> folder."""
    job = tmp_path / "sweep" / "0"
    shutil.copytree(tiny_run, job)
    assert load_model(job, which="latest").step == 8


def test_tta_threshold_defaults_to_the_plain_one_and_is_read_from_the_config(tmp_path, tiny_run):
    model = load_model(tiny_run)  # trainer.decode_threshold_tta unset (null)
    assert model.threshold_for(True) == model.threshold_for(False) == model.decode_threshold
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    cfg.trainer.decode_threshold, cfg.trainer.decode_threshold_tta = 0.95, 0.7
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    tuned = load_model(run)
    assert (tuned.threshold_for(False), tuned.threshold_for(True)) == (0.95, 0.7)


def test_load_model_errors_name_the_path(tmp_path, tiny_run):
    with pytest.raises(ModelLoadError, match="no such run directory"):
        load_model(tmp_path / "nowhere")
    with pytest.raises(ModelLoadError, match="not a stemjax run directory"):
        load_model(tmp_path)
    # a checkpoint from an incompatible model config
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    cfg = OmegaConf.load(bad / ".hydra" / "config.yaml")
    cfg.model.width = 16
    OmegaConf.save(cfg, bad / ".hydra" / "config.yaml")
    with pytest.raises(ModelLoadError, match=r"do not fit the model"):
        load_model(bad)
    cfg.model.width = 8
    cfg.model.nosuchkey = 1
    OmegaConf.save(cfg, bad / ".hydra" / "config.yaml")
    with pytest.raises(ModelLoadError, match=r"config.yaml: not a valid stemjax training config"):
        load_model(bad)
    with pytest.raises(ModelLoadError, match="no checkpoint at step 5"):
        load_model(tiny_run, step=5)


def test_tiled_equals_untiled(local_run):
    """Without normalisation layers the tiny U-Net's receptive field fits in a 32-px margin: one
    window and 3×3 windows of 64-px cores give the untiled network's output exactly, up to the
    image's edges (windows stop at the edge instead of reading mirrored context)."""
    model = load_model(local_run)
    image, _ = synthetic_micrograph(150, PX, n_defects=10, seed=3)
    image = normalise_image(image)
    # untiled: one pass over the whole image, padded only to a multiple of 4 (150 → 152)
    padded = np.pad(image, ((0, 2), (0, 2)), mode="reflect")
    logits = model.logits(padded[None])[0]
    p_ref = 1.0 - np.asarray(jax.nn.softmax(logits, -1))[:150, :150, 0]
    thr = float(np.quantile(p_ref, 0.995))
    ref = jax.device_get(decode_defects(logits, threshold=thr, min_distance_px=3))
    ref_pts = ref.points[ref.valid]
    inside = np.all((ref_pts > -0.5) & (ref_pts < 149.5), axis=1)
    for tile in (256, 128):  # one window; 3×3 windows
        det, p = predict_tiles(model, image, tile_px=tile, margin_px=32, threshold=thr,
                               return_probabilities=True)  # fmt: skip
        np.testing.assert_allclose(p, p_ref, atol=2e-5)
        assert len(det.points) == inside.sum() > 0
        o1, o2 = np.lexsort(det.points.T), np.lexsort(ref_pts[inside].T)
        np.testing.assert_allclose(det.points[o1], ref_pts[inside][o2], atol=1e-3)
        np.testing.assert_array_equal(det.classes[o1], ref.classes[ref.valid][inside][o2])


def test_tile_grid_cores_partition_the_image_and_windows_stay_inside():
    from stemjax.predict.inference import tile_grid

    for shape in ((1024, 1024), (1040, 304), (96, 608)):
        windows, (th, tw) = tile_grid(shape, 512, 64, 16)
        owned = np.zeros(shape, int)
        for (r, c), (r_lo, r_hi), (c_lo, c_hi) in windows:
            assert r % 16 == c % 16 == 0  # the untiled pass's pooling grid
            assert 0 <= r and r + th <= shape[0] and 0 <= c and c + tw <= shape[1]
            assert r <= r_lo and r_hi <= r + th and c <= c_lo and c_hi <= c + tw
            # a full margin of context wherever the window does not end at the image's edge
            assert (r_lo - r >= 64 or r == 0) and (r + th - r_hi >= 64 or r + th == shape[0])
            assert (c_lo - c >= 64 or c == 0) and (c + tw - c_hi >= 64 or c + tw == shape[1])
            owned[r_lo:r_hi, c_lo:c_hi] += 1
        assert np.all(owned == 1)
        assert (th, tw) == (min(512, shape[0]), min(512, shape[1]))
    with pytest.raises(ValueError, match="multiple of 16"):
        tile_grid((1000, 1024), 512, 64, 16)


def test_groupnorm_tiles_agree_closely(model):
    """GroupNorm statistics span a tile, so tiles differ slightly from one pass (the untrained
    smoke model, 128-px tiles: 2× its 64-px training images)."""
    image = normalise_image(synthetic_micrograph(150, PX, n_defects=10, seed=3)[0])
    _, p1 = predict_tiles(model, image, tile_px=256, margin_px=32, return_probabilities=True)
    _, p9 = predict_tiles(model, image, tile_px=128, margin_px=32, return_probabilities=True)
    diff = np.abs(p1 - p9)
    assert diff.mean() < 0.01 and diff.max() < 0.1


def test_tta_averages_the_eight_symmetries(model):
    image = normalise_image(synthetic_micrograph(96, PX, n_defects=3, seed=4)[0])
    _, p = predict_tiles(model, image, tile_px=192, margin_px=32, tta=True,
                         return_probabilities=True)  # fmt: skip
    _, p_t = predict_tiles(model, image.T.copy(), tile_px=192, margin_px=32, tta=True,
                           return_probabilities=True)  # fmt: skip
    np.testing.assert_allclose(p_t, p.T, atol=1e-5)  # TTA output is equivariant under transpose
    _, p_plain = predict_tiles(model, image, tile_px=192, margin_px=32,
                               return_probabilities=True)  # fmt: skip
    assert np.abs(p - p_plain).max() > 1e-4  # and differs from a single pass


def test_cli_writes_outputs_and_never_overwrites(tmp_path, tiny_run):
    image, _ = synthetic_micrograph(128, PX, n_defects=5, seed=5)
    tif = write_tif(tmp_path / "a.tif", image, PX)
    out = tmp_path / "out"
    args = [str(tiny_run), str(tif), "--out", str(out), "--threshold", "0.3", "--tile", "128",
            "--margin", "32"]  # fmt: skip
    assert cli(args) == 0
    for name in ("defects.csv", "defects.parquet", "sites.parquet", "concentrations.csv"):
        assert (out / name).stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"]["step"] == 4 and summary["images"][0]["image_id"] == "a"
    assert summary["n_sites"] >= 120  # ≈ 150 columns in 26.5 Å × 26.5 Å
    assert 0 <= summary["n_moved_to_site_sublattice"] <= summary["n_defects"]
    assert (out / "figures" / "concentrations.png").exists()
    before = (out / "defects.csv").read_bytes()
    (out / "defects.csv").write_text("mine")
    assert cli([*args, "--no-figures"]) == 2  # refuses: outputs exist
    assert (out / "defects.csv").read_text() == "mine"
    assert cli([*args, "--overwrite", "--no-figures"]) == 0
    assert (out / "defects.csv").read_bytes() == before
    assert cli([str(tiny_run), str(tmp_path / "missing.tif"), "--out", str(tmp_path / "o2")]) == 2


def test_export_model_is_slim_and_loads_the_same(tmp_path, tiny_run, model):
    out = export_model(tiny_run, tmp_path / "shipped")
    from stemjax.training import Checkpointer

    with Checkpointer(out / "checkpoints") as ckpt:
        assert ckpt.all_steps() == [4] and ckpt.item_keys(4) == ["model"]  # no optimizer state
    shipped = load_model(out)
    x = np.asarray(synthetic_micrograph(64, PX, n_defects=2, seed=6)[0])[None]
    np.testing.assert_allclose(
        np.asarray(shipped.logits(x)), np.asarray(model.logits(x)), rtol=1e-5, atol=1e-5
    )
    with pytest.raises(FileExistsError):
        export_model(tiny_run, out)


def test_site_prior_offsets_and_errors(model):
    reg = model.registry
    assert model.train_prior == "train" and model.decode_prior is None
    np.testing.assert_array_equal(model.logit_offsets(), 0.0)  # no decode_prior: no shift
    np.testing.assert_array_equal(model.logit_offsets("train"), 0.0)
    off = model.logit_offsets("eval")
    train, ev = (model.site_priors[k] for k in ("train", "eval"))
    vw = reg.id("VW")
    assert off[vw] == pytest.approx(np.log(ev[:, vw].sum() / train[:, vw].sum()), rel=1e-6)
    conc = {n: 0.01 for n in reg.defect_names}
    np.testing.assert_allclose(
        model.logit_offsets(conc)[1:], np.log(0.01 / train[:, 1:].sum(0)), rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"site_prior 'nope': not a prior of .*known: \['eval'"):
        model.logit_offsets("nope")
    with pytest.raises(ValueError, match=r"site_prior: no concentration for \['VW'\]"):
        model.logit_offsets({n: 0.01 for n in reg.defect_names if n != "VW"})
    with pytest.raises(ValueError, match=r"site_prior: concentrations.VW = 2"):
        model.logit_offsets({**conc, "VW": 2.0})
    with pytest.raises(ValueError, match="needs a first pass"):
        model.logit_offsets("estimate")


def test_load_model_checks_decode_prior(tmp_path, tiny_run):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_run, bad)
    cfg = OmegaConf.load(bad / ".hydra" / "config.yaml")
    cfg.trainer.decode_prior = "estimate"
    OmegaConf.save(cfg, bad / ".hydra" / "config.yaml")
    assert load_model(bad).decode_prior == "estimate"
    cfg.trainer.decode_prior = "realistic"
    OmegaConf.save(cfg, bad / ".hydra" / "config.yaml")
    with pytest.raises(ModelLoadError, match=r"trainer.decode_prior = 'realistic': expected null"):
        load_model(bad)


def test_logit_offsets_shift_the_decoding(model):
    """predict_tiles adds the offsets to every logit: zeros change nothing, a large negative
    offset on every defect class removes every detection, and a class's own offset moves only
    its probability."""
    image = normalise_image(synthetic_micrograph(96, PX, n_defects=6, seed=7)[0])
    kw = dict(tile_px=128, margin_px=32, threshold=0.05, return_probabilities=True)
    det0, p0 = predict_tiles(model, image, **kw)
    det_z, p_z = predict_tiles(model, image, logit_offsets=np.zeros(8, np.float32), **kw)
    np.testing.assert_array_equal(p_z, p0)
    np.testing.assert_array_equal(det_z.points, det0.points)
    assert len(det0.points) > 0
    det_n, p_n = predict_tiles(model, image, logit_offsets=np.r_[0.0, [-30.0] * 7], **kw)
    assert len(det_n.points) == 0 and p_n.max() < 1e-6
    up = np.zeros(8, np.float32)
    up[model.registry.id("VW")] = 3.0
    det_u, p_u = predict_tiles(model, image, logit_offsets=up, **kw)
    assert np.all(p_u >= p0 - 1e-6) and (p_u - p0).max() > 1e-3


def test_predict_passes_the_site_prior(model):
    image = synthetic_micrograph(96, PX, n_defects=6, seed=7)[0]
    kw = dict(pixel_size_A=PX, tile_px=128, margin_px=32, threshold=0.05, progress=False)
    assert len(predict(model, image, site_prior="train", **kw).defects) > 0
    never = {n: 1e-12 for n in model.registry.defect_names}  # every class 1e-10× its training rate
    assert len(predict(model, image, site_prior=never, **kw).defects) == 0
    with pytest.raises(ValueError, match="site_prior 'x'"):
        predict(model, image, site_prior="x", **kw)
