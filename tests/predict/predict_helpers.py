"""Synthetic micrographs with known defects and a fixture 'model' for the predict tests.

The image: Gaussian columns on the 2H honeycomb (a = 3.297 Å); pristine chalcogen columns
amplitude 1, metal columns 1.6 (W vs Se2), defect columns (chalcogen sites) of class id k
amplitude k + 1.5. The fixture model finds columns classically and classifies them by their
brightness relative to the tile's chalcogen level (25th percentile of the column peaks; scale-
and offset-free, so it survives the resampling and normalisation predict applies), then emits
class-map logits (disks of radius 2 px, peaked at the column). It has the interface predict uses.
"""

import dataclasses

import numpy as np
from omegaconf import OmegaConf
from scipy import ndimage

from stemjax.specimen import DefectRegistry, load_specimen_config, to_specimen_config
from stemjax.training import Checkpointer, init_train_state, load_train_config

A = 3.297


def honeycomb(extent_A, a=A):
    """Metal and chalcogen column positions (x, y) in Å covering [0, extent)²."""
    n = int(extent_A / a) + 3
    i, j = np.meshgrid(np.arange(-n, 2 * n), np.arange(-n, 2 * n), indexing="ij")
    metal = np.stack([i * a + j * a / 2, j * a * np.sqrt(3) / 2], -1).reshape(-1, 2)
    chalc = metal + np.array([a / 2, a / (2 * np.sqrt(3))])
    keep = lambda p: p[np.all((p >= 1.0) & (p < extent_A - 1.0), axis=1)]  # noqa: E731
    return keep(metal), keep(chalc)


def synthetic_micrograph(
    size_px, pixel_size_A, n_defects=40, seed=0, sigma_A=0.45, noise=0.03, metal_amp=1.6
):
    """(image (H, W), truth dict: xy_A (N, 2) Å, class_id (N,)): classes 1 and 2 on chalcogen
    sites; positions x along the column axis, y along rows, Å from the top-left pixel centre."""
    rng = np.random.default_rng(seed)
    extent = size_px * pixel_size_A
    metal, chalc = honeycomb(extent)
    sites = np.concatenate([metal, chalc])
    amp = np.where(np.arange(len(sites)) < len(metal), metal_amp, 1.0)
    # defects away from each other (≥ 5 Å) so that the fixture's 3×3 classification is clean
    order = len(metal) + rng.permutation(len(chalc))
    chosen = []
    for idx in order:
        if all(np.hypot(*(sites[idx] - sites[c])) > 5.0 for c in chosen):
            chosen.append(idx)
        if len(chosen) == n_defects:
            break
    chosen = np.array(chosen)
    cls = rng.choice([1, 2], size=len(chosen))
    amp[chosen] = cls + 1.5
    # render: each column on a window of ±4σ
    img = np.zeros((size_px, size_px))
    r = int(np.ceil(4 * sigma_A / pixel_size_A))
    off = np.arange(-r, r + 1)
    for (x, y), a in zip(sites, amp, strict=True):
        c0, r0 = int(round(x / pixel_size_A)), int(round(y / pixel_size_A))
        rows, cols = r0 + off, c0 + off
        g_r = np.exp(-0.5 * ((rows * pixel_size_A - y) / sigma_A) ** 2)
        g_c = np.exp(-0.5 * ((cols * pixel_size_A - x) / sigma_A) ** 2)
        rs, cs = (rows >= 0) & (rows < size_px), (cols >= 0) & (cols < size_px)
        img[np.ix_(rows[rs], cols[cs])] += a * np.outer(g_r[rs], g_c[cs])
    img += noise * rng.standard_normal(img.shape)
    return img.astype(np.float32), {"xy_A": sites[chosen], "class_id": cls}


class FixtureModel:
    """Stand-in for `TrainedModel`: same attributes, classical detection as 'network'."""

    def __init__(self, pixel_size_A=0.2074, min_distance_px=3):
        self.registry = DefectRegistry.from_config(load_specimen_config("wse2te"))
        self.pixel_size_A = pixel_size_A
        self.downsample_factor = 16
        self.decode_threshold = 0.5
        self.decode_threshold_tta = 0.5
        self.min_distance_px = min_distance_px
        self.sublattice_brightness = {"metal": 74**1.7, "chalcogen": 2 * 34**1.7}
        self.decode_prior = None
        self.calls = 0

    def threshold_for(self, tta):
        return self.decode_threshold_tta if tta else self.decode_threshold

    def logit_offsets(self, site_prior=None):
        """No prior shift: the classical 'network' has no training prior."""
        return np.zeros(self.registry.num_classes, np.float32)

    def logits(self, tiles):
        tiles = np.asarray(tiles)
        self.calls += 1
        out = np.zeros(tiles.shape + (self.registry.num_classes,), np.float32)
        out[..., 0] = 10.0
        yy, xx = np.mgrid[-2:3, -2:3]
        disk = (yy**2 + xx**2) <= 4
        for b, t in enumerate(tiles):
            s = ndimage.gaussian_filter(t, 1.0)
            peaks = (s == ndimage.maximum_filter(s, size=7)) & (s > np.percentile(s, 60))
            rows, cols = np.nonzero(peaks)
            bg = np.percentile(s, 5)
            ref = np.percentile(s[rows, cols], 25) - bg
            ratio = (s[rows, cols] - bg) / ref
            cls = np.digitize(ratio, [2.0, 3.0])  # <2: pristine, 2–3: class 1, >3: class 2
            for r, c, k in zip(rows, cols, cls, strict=True):
                if k == 0 or r < 2 or c < 2 or r >= t.shape[0] - 2 or c >= t.shape[1] - 2:
                    continue
                out[b, r - 2 : r + 3, c - 2 : c + 3, :][disk] = 0.0
                out[b, r - 2 : r + 3, c - 2 : c + 3, k][disk] = (20.0 - yy**2 - xx**2)[disk]
        return out


def make_run(run, overrides=()):
    """A run directory as `python -m stemjax.train` writes it, with an untrained tiny U-Net
    (smoke config + overrides) saved at steps 4 (val_f1 0.5) and 8 (val_f1 0.25)."""
    cfg = load_train_config(["+experiment=wse2te", "trainer=smoke", "trainer.ema=0.5", *overrides])
    obj = OmegaConf.to_object(cfg)
    registry = DefectRegistry.from_config(to_specimen_config(cfg.specimen))
    mcfg = dataclasses.replace(obj.model, num_classes=registry.num_classes)
    _, _, state, _ = init_train_state(mcfg, obj.trainer)
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    with Checkpointer(run / "checkpoints") as ckpt:
        ckpt.save(4, state, metrics={"val_f1": 0.5})
        ckpt.save(8, state, metrics={"val_f1": 0.25})
    return run
