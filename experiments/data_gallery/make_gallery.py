"""Gallery of training data (like the seed's Figure 1): clean vs corrupted, low and high
magnification, defect labels overlaid. Writes PNGs next to this script.

    python experiments/data_gallery/make_gallery.py [overrides...]   e.g. data.prior=eval
"""

import sys
import time
from pathlib import Path

import jax
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from stemjax.config import load_config, to_runtime  # noqa: E402
from stemjax.trainingdata.pipeline import build_batch_maker  # noqa: E402

HERE = Path(__file__).resolve().parent
COLOURS = plt.get_cmap("tab10")


def main(overrides):
    cfg = load_config(["data.batch_size=2", *overrides])
    specimen, prior, corruption, data = to_runtime(cfg)
    t0 = time.perf_counter()
    maker = build_batch_maker(specimen, prior, corruption, data)
    batch = jax.device_get(maker.make_batch(jax.random.key(int(cfg.seed))))
    print(f"planned and simulated in {time.perf_counter() - t0:.1f} s")
    registry = maker.registry
    px = maker.pixel_size
    for i in range(2):
        clean, image = batch.clean[i], batch.images[i]
        pts, cls, valid = batch.points[i], batch.classes[i], batch.valid[i]
        fig, axes = plt.subplots(2, 3, figsize=(15, 10))
        n = image.shape[0]
        zoom = slice(n // 2 - 24, n // 2 + 24)
        panels = [
            (clean, "clean (fraction of beam)", None),
            (image, "corrupted, normalised", None),
            (image, "corrupted + labels", "labels"),
        ]
        for row, region in enumerate((slice(0, n), zoom)):
            for col, (img, title, mode) in enumerate(panels):
                ax = axes[row, col]
                sub = img[region, region]
                ax.imshow(sub.T, origin="lower", cmap="gray")
                if mode:
                    for k in range(1, registry.num_classes):
                        sel = valid & (cls == k)
                        p = pts[sel] - region.start
                        inside = (p >= 0).all(1) & (p < sub.shape[0]).all(1)
                        ax.scatter(
                            p[inside, 0],
                            p[inside, 1],
                            s=40 if row else 14,
                            facecolors="none",
                            edgecolors=[COLOURS(k % 10)],
                            label=registry.name(k) if row == 0 else None,
                        )
                    if row == 0:
                        ax.legend(fontsize=7, loc="upper right", framealpha=0.6)
                mag = "full field" if row == 0 else "zoom"
                width = sub.shape[0] * px
                ax.set_title(f"{title} — {mag} ({width:.1f} Å)", fontsize=9)
                ax.set_xticks([])
                ax.set_yticks([])
        dose = float(batch.dose[i])
        fig.suptitle(
            f"{cfg.specimen.name} / {cfg.microscope.name}, prior={data.prior}, "
            f"simulation={data.simulation}, dose {dose:.0f} e/px",
            fontsize=11,
        )
        fig.tight_layout()
        out = HERE / f"gallery_{cfg.specimen.name}_{data.prior}_{i}.png"
        fig.savefig(out, dpi=90)
        plt.close(fig)
        counts = {
            registry.name(k): int((valid & (cls == k)).sum())
            for k in range(1, registry.num_classes)
        }
        print(f"wrote {out}  defects: {counts}")


if __name__ == "__main__":
    main(sys.argv[1:])
