"""Reading real micrographs for prediction: DM3/DM4, EMD (NCEM + Velox), TIFF, NPY.

`read_micrograph(path, pixel_size_A=None, frame=None)` → `Micrograph` (2-D float32 image,
Å/px); `as_micrograph` validates an array; `write_tif` writes a calibrated float32 TIFF;
`resample_to_pixel_size` brings an image to the pixel size (Å/px) a model was trained at.
Bad inputs raise `MicrographError` (a ValueError) naming the file and what was expected.
"""

from stemjax.io.micrograph import (
    MIN_SIZE_PX,
    SUPPORTED_SUFFIXES,
    Micrograph,
    MicrographError,
    as_micrograph,
    read_micrograph,
    resample_to_pixel_size,
    write_tif,
)

__all__ = [
    "MIN_SIZE_PX",
    "SUPPORTED_SUFFIXES",
    "Micrograph",
    "MicrographError",
    "as_micrograph",
    "read_micrograph",
    "resample_to_pixel_size",
    "write_tif",
]
