"""Minimal Gatan DM3/DM4 writer for tests (rsciio reads DM files but cannot write them).

Layout after the published format descriptions (C. Boothroyd's DM3 notes; the DM4 notes of
the DM3/DM4 readers in ImageJ/Bio-Formats and HyperSpy):

    header      version (int32 BE: 3 or 4), root length (DM3 int32 / DM4 int64, BE),
                byte order of tag data (int32 BE; 1 = little endian)
    tag group   is_sorted (u8), is_open (u8), n_tags (DM3 int32 / DM4 int64, BE), n × entry
    tag entry   kind (u8: 20 group, 21 data), name length (int16 BE), name (bytes),
                [DM4 only: int64 BE byte length of the rest of the entry], then a group or:
    data        "%%%%", n_info (int32/int64 BE), n_info × int32/int64 BE info words
                (type codes: [t] simple, [20, t, n] array, [15, ...] struct), then the value
                bytes in the file's data byte order (little endian here).
    trailer     8 zero bytes.

Each file holds a small thumbnail (ImageList entry 0, listed under Thumbnails as real files
do) and the image (entry 1) with ImageData/{Data, DataType, Dimensions, Calibrations}.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

# DM tag data type codes
_LONG, _ULONG, _FLOAT, _DOUBLE, _BOOL, _USHORT, _ARRAY = 3, 5, 6, 7, 8, 4, 20
_SIMPLE_FORMAT = {_LONG: "<i", _ULONG: "<I", _FLOAT: "<f", _DOUBLE: "<d", _BOOL: "<B"}
# DM image DataType codes and the numpy dtype / DM array element type of the pixels
_IMAGE_TYPES = {
    np.dtype(np.float32): (2, _FLOAT),
    np.dtype(np.int16): (1, 2),
    np.dtype(np.uint16): (10, _USHORT),
    np.dtype(np.int32): (7, _LONG),
}


class Simple:
    """A scalar tag value of DM type `code`."""

    def __init__(self, code: int, value):
        self.code, self.value = code, value


class Array:
    """A 1-D array tag (pixel data, or a string as uint16 code units)."""

    def __init__(self, code: int, payload: bytes, n: int):
        self.code, self.payload, self.n = code, payload, n


def string(text: str) -> Array:
    return Array(_USHORT, text.encode("utf-16-le"), len(text))


def _int(version: int, value: int) -> bytes:
    return struct.pack(">i" if version == 3 else ">q", value)


def _data_body(version: int, value) -> bytes:
    if isinstance(value, Simple):
        info = [value.code]
        payload = struct.pack(_SIMPLE_FORMAT[value.code], value.value)
    elif isinstance(value, Array):
        info = [_ARRAY, value.code, value.n]
        payload = value.payload
    else:
        raise TypeError(type(value))
    head = b"%%%%" + _int(version, len(info)) + b"".join(_int(version, i) for i in info)
    return head + payload


def _group_body(version: int, items: list[tuple[str, object]]) -> bytes:
    body = bytes([0, 1]) + _int(version, len(items))
    return body + b"".join(_entry(version, name, value) for name, value in items)


def _entry(version: int, name: str, value) -> bytes:
    is_group = isinstance(value, list)
    encoded = name.encode("latin-1")
    head = bytes([20 if is_group else 21]) + struct.pack(">h", len(encoded)) + encoded
    body = _group_body(version, value) if is_group else _data_body(version, value)
    if version == 4:
        head += struct.pack(">q", len(body))
    return head + body


def _image_entry(data: np.ndarray, scales, units, name: str) -> list:
    """One ImageList entry. `data` is (H, W) or (N, H, W); scales/units in array-axis order."""
    data = np.ascontiguousarray(data)
    dm_type, el_code = _IMAGE_TYPES[data.dtype]
    little = data.astype(data.dtype.newbyteorder("<"), copy=False)
    dims_dm = list(data.shape[::-1])  # DM lists x (fastest) first
    calib_dm = [
        (
            "",
            [
                ("Origin", Simple(_FLOAT, 0.0)),
                ("Scale", Simple(_FLOAT, float(s))),
                ("Units", string(u)),
            ],
        )
        for s, u in zip(scales[::-1], units[::-1], strict=True)
    ]
    return [
        (
            "ImageData",
            [
                (
                    "Calibrations",
                    [
                        (
                            "Brightness",
                            [
                                ("Origin", Simple(_FLOAT, 0.0)),
                                ("Scale", Simple(_FLOAT, 1.0)),
                                ("Units", string("")),
                            ],
                        ),
                        ("Dimension", calib_dm),
                        ("DisplayCalibratedUnits", Simple(_BOOL, 1)),
                    ],
                ),
                ("Data", Array(el_code, little.tobytes(), data.size)),
                ("DataType", Simple(_LONG, dm_type)),
                ("Dimensions", [("", Simple(_ULONG, d)) for d in dims_dm]),
                ("PixelDepth", Simple(_LONG, data.dtype.itemsize)),
            ],
        ),
        (
            "ImageTags",
            [("Microscope Info", [("Voltage", Simple(_DOUBLE, 80000.0))])],
        ),
        ("Name", string(name)),
    ]


def write_dm(
    path,
    data: np.ndarray,
    scales=(0.02, 0.02),
    units=("nm", "nm"),
    *,
    version: int = 3,
    name: str = "HAADF",
) -> Path:
    """Write `data` ((H, W) or (N, H, W); float32/int16/uint16/int32) as a DM3/DM4 file.

    scales/units: calibration per array axis (e.g. (0.02, 0.02) nm/px for y, x).
    """
    if version not in (3, 4):
        raise ValueError(version)
    thumb = np.zeros((4, 4), np.float32)
    root = [
        (
            "ImageList",
            [
                ("", _image_entry(thumb, (1.0, 1.0), ("", ""), "thumbnail")),
                ("", _image_entry(np.asarray(data), scales, units, name)),
            ],
        ),
        ("Thumbnails", [("", [("ImageIndex", Simple(_ULONG, 0))])]),
    ]
    tags = bytes([1, 0]) + _int(version, len(root))
    tags += b"".join(_entry(version, n, v) for n, v in root)
    trailer = bytes(8)
    header_tail = struct.pack(">i", 1)  # tag data little endian
    root_length = len(tags) + len(trailer)
    out = struct.pack(">i", version) + _int(version, root_length) + header_tail + tags + trailer
    p = Path(path)
    p.write_bytes(out)
    return p
