"""Write the small fixed synthetic micrograph the shipped-model test analyses.

256×256 px at 0.2074 Å/px from the training-data pipeline (wse2te specimen and microscope,
default corruption, column-mode simulation) at the TRAINING prior, whose rare classes are
oversampled so that every class appears in one small field; fixed seed: `test_micrograph.tif`
(float32, pixel size in the
ImageJ metadata) and `test_micrograph_truth.npz` (points (N, 2) (row, col) px, class ids,
sublattice ids; pristine sites included with class 0).

    python experiments/wse2te/make_test_micrograph.py
"""

from pathlib import Path

import jax
import numpy as np

from stemjax.config import load_config, to_runtime
from stemjax.io import write_tif
from stemjax.trainingdata.pipeline import build_batch_maker

HERE = Path(__file__).parent


def main(seed: int = 7, prior: str = "train"):
    cfg = load_config(["data.image_size_px=256", "data.batch_size=1", f"data.prior={prior}"])
    maker = build_batch_maker(*to_runtime(cfg))
    b = jax.device_get(maker.make_batch(jax.random.key(seed)))
    v = b.valid[0]
    write_tif(HERE / "test_micrograph.tif", b.images[0], maker.pixel_size, overwrite=True)
    np.savez_compressed(
        HERE / "test_micrograph_truth.npz",
        points_px=b.points[0][v],
        classes=b.classes[0][v],
        sublattice=b.sublattice[0][v],
        pixel_size_A=maker.pixel_size,
        prior=prior,
        seed=seed,
    )
    counts = np.bincount(b.classes[0][v], minlength=maker.registry.num_classes)
    print(dict(zip(maker.registry.names, counts.tolist(), strict=True)))


if __name__ == "__main__":
    main()
