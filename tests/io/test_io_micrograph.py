"""stemjax.io: reading micrographs (DM3/DM4, EMD, TIFF, NPY), validation errors, resampling.

DM files are written by tests/io/dm_writer.py (rsciio reads but cannot write DM); EMD files
by rsciio's own NCEM writer (plus h5py to merge two files into a multi-signal one); the Velox
multi-detector case is a realistic signal list fed through a monkeypatched rsciio reader.
"""

import logging

import h5py
import numpy as np
import pytest
import tifffile
from dm_writer import write_dm

from stemjax.io import (
    SUPPORTED_SUFFIXES,
    Micrograph,
    MicrographError,
    as_micrograph,
    read_micrograph,
    resample_to_pixel_size,
    write_tif,
)

RNG = np.random.default_rng(0)


def image(shape=(32, 40), dtype=np.float32):
    return (RNG.random(shape) * 1000).astype(dtype)


def write_emd(path, data, scale_nm=0.02, title="HAADF", frame_axis=None):
    """NCEM EMD through rsciio's writer; y/x axes in nm, optional leading time axis."""
    from rsciio.emd import file_writer

    axes = [
        dict(name=n, size=s, scale=scale_nm, offset=0.0, units="nm", navigate=False)
        for n, s in zip(("y", "x"), data.shape[-2:], strict=True)
    ]
    if data.ndim == 3:
        axes.insert(
            0, dict(name="t", size=data.shape[0], scale=1.0, offset=0.0, units="s", navigate=True)
        )
    signal = dict(
        data=data,
        axes=axes,
        metadata={"General": {"title": title}, "Signal": {}},
        original_metadata={},
    )
    file_writer(str(path), signal)
    return path


# ---------------------------------------------------------------------------------- NPY


def test_npy_round_trip_converts_integers_to_float32(tmp_path):
    data = image(dtype=np.uint16)
    np.save(tmp_path / "a.npy", data)
    m = read_micrograph(tmp_path / "a.npy", pixel_size_A=0.2)
    assert isinstance(m, Micrograph)
    assert m.image.dtype == np.float32 and m.image.shape == (32, 40)
    np.testing.assert_array_equal(m.image, data.astype(np.float32))
    assert m.pixel_size_A == 0.2 and m.frame is None
    assert m.path == str(tmp_path / "a.npy")
    assert m.metadata["original_dtype"] == "uint16" and m.metadata["format"] == "npy"
    assert m.extent_A == pytest.approx((32 * 0.2, 40 * 0.2))


def test_npy_without_pixel_size_needs_explicit(tmp_path):
    np.save(tmp_path / "a.npy", image())
    with pytest.raises(MicrographError, match=r"a\.npy: no pixel size.*pass pixel_size_A="):
        read_micrograph(tmp_path / "a.npy")


def test_npy_stack_needs_frame(tmp_path):
    stack = image((3, 20, 24))
    np.save(tmp_path / "s.npy", stack)
    with pytest.raises(MicrographError, match=r"s\.npy: is a stack of 3 frames; pass frame="):
        read_micrograph(tmp_path / "s.npy", pixel_size_A=0.2)
    m = read_micrograph(tmp_path / "s.npy", pixel_size_A=0.2, frame=2)
    np.testing.assert_array_equal(m.image, stack[2])
    assert m.frame == 2 and m.metadata["n_frames"] == 3
    for bad in (3, -1):
        with pytest.raises(MicrographError, match=r"s\.npy: frame=.* out of range.*3 frames"):
            read_micrograph(tmp_path / "s.npy", pixel_size_A=0.2, frame=bad)


# ---------------------------------------------------------------------------------- TIFF


def test_write_tif_round_trip_is_exact(tmp_path):
    data = RNG.normal(size=(33, 47)).astype(np.float32)
    px = 0.1937
    out = write_tif(tmp_path / "w.tif", data, px)
    assert out == tmp_path / "w.tif"
    m = read_micrograph(out)
    assert m.pixel_size_A == pytest.approx(px, rel=1e-6)
    assert m.metadata["pixel_size_source"] == "file"
    assert m.image.dtype == np.float32
    np.testing.assert_array_equal(m.image.view(np.uint32), data.view(np.uint32))  # bitwise


def test_write_tif_refuses_to_overwrite(tmp_path):
    write_tif(tmp_path / "w.tif", image(), 0.2)
    with pytest.raises(MicrographError, match=r"w\.tif: file exists; pass overwrite=True"):
        write_tif(tmp_path / "w.tif", image(), 0.3)
    write_tif(tmp_path / "w.tif", image(), 0.3, overwrite=True)
    assert read_micrograph(tmp_path / "w.tif").pixel_size_A == pytest.approx(0.3, rel=1e-6)


@pytest.mark.parametrize(
    "unit, per_unit, expected_A",
    [
        ("nm", 1 / 0.02, 0.2),
        ("micron", 1 / 2e-5, 0.2),
        ("\\u00B5m", 1 / 3e-5, 0.3),
        ("pm", 1 / 25.0, 0.25),
        ("A", 1 / 0.5, 0.5),
    ],
)
def test_imagej_tif_pixel_size(tmp_path, unit, per_unit, expected_A):
    tifffile.imwrite(
        tmp_path / "ij.tif",
        image(),
        imagej=True,
        resolution=(per_unit, per_unit),
        metadata={"unit": unit},
    )
    m = read_micrograph(tmp_path / "ij.tif")
    assert m.pixel_size_A == pytest.approx(expected_A, rel=1e-6)
    assert m.metadata["pixel_size_tag"] == "imagej"


def test_ome_tif_stack_pixel_size_and_frame(tmp_path):
    stack = image((3, 20, 24))
    tifffile.imwrite(
        tmp_path / "o.ome.tif",
        stack,
        ome=True,
        metadata={
            "axes": "TYX",
            "PhysicalSizeX": 0.05,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.05,
            "PhysicalSizeYUnit": "nm",
        },
    )
    with pytest.raises(MicrographError, match=r"o\.ome\.tif: is a stack of 3 frames"):
        read_micrograph(tmp_path / "o.ome.tif")
    m = read_micrograph(tmp_path / "o.ome.tif", frame=1)
    np.testing.assert_array_equal(m.image, stack[1])
    assert m.pixel_size_A == pytest.approx(0.5) and m.metadata["pixel_size_tag"] == "ome"


def test_tif_micrometer_resolution_unit_is_used(tmp_path):
    tifffile.imwrite(
        tmp_path / "r.tif", image(), resolution=(1 / 2e-5, 1 / 2e-5), resolutionunit="MICROMETER"
    )
    assert read_micrograph(tmp_path / "r.tif").pixel_size_A == pytest.approx(0.2, rel=1e-6)


def test_generic_inch_tif_has_no_pixel_size(tmp_path):
    tifffile.imwrite(tmp_path / "g.tif", image(), resolution=(72, 72), resolutionunit="INCH")
    with pytest.raises(MicrographError, match=r"g\.tif: no pixel size in the file's metadata"):
        read_micrograph(tmp_path / "g.tif")
    m = read_micrograph(tmp_path / "g.tif", pixel_size_A=0.21)
    assert m.pixel_size_A == 0.21 and m.metadata["pixel_size_source"] == "explicit"


def test_explicit_pixel_size_overrides_with_warning(tmp_path, caplog):
    write_tif(tmp_path / "w.tif", image(), 0.2)
    with caplog.at_level(logging.WARNING, logger="stemjax.io.micrograph"):
        m = read_micrograph(tmp_path / "w.tif", pixel_size_A=0.25)
    assert m.pixel_size_A == 0.25 and m.metadata["pixel_size_source"] == "explicit"
    assert m.metadata["file_pixel_size_A"] == pytest.approx(0.2, rel=1e-6)
    assert any("differs from the file's" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="stemjax.io.micrograph"):
        m = read_micrograph(tmp_path / "w.tif", pixel_size_A=0.201)  # within 1 %: silent
    assert m.pixel_size_A == 0.201 and not caplog.records


def test_rgb_tif_is_rejected_unless_gray(tmp_path):
    rgb = (RNG.random((20, 24, 3)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    with pytest.raises(MicrographError, match=r"rgb\.tif: colour \(RGB/RGBA\) image"):
        read_micrograph(tmp_path / "rgb.tif", pixel_size_A=0.2)
    gray = np.repeat(rgb[..., :1], 3, axis=-1)
    tifffile.imwrite(tmp_path / "gray.tif", gray, photometric="rgb")
    m = read_micrograph(tmp_path / "gray.tif", pixel_size_A=0.2)
    np.testing.assert_array_equal(m.image, rgb[..., 0].astype(np.float32))


# ---------------------------------------------------------------------------------- EMD


def test_emd_round_trip(tmp_path):
    data = image((24, 30))
    write_emd(tmp_path / "a.emd", data, scale_nm=0.0193)
    m = read_micrograph(tmp_path / "a.emd")
    assert m.pixel_size_A == pytest.approx(0.193, rel=1e-9)
    np.testing.assert_array_equal(m.image, data)
    assert m.metadata["format"] == "emd" and m.metadata["title"] == "HAADF"
    assert m.metadata["units"] == ("nm", "nm")


def test_emd_stack_frame(tmp_path):
    stack = image((4, 20, 24))
    write_emd(tmp_path / "s.emd", stack)
    with pytest.raises(MicrographError, match=r"s\.emd: is a stack of 4 frames; pass frame="):
        read_micrograph(tmp_path / "s.emd")
    m = read_micrograph(tmp_path / "s.emd", frame=3)
    np.testing.assert_array_equal(m.image, stack[3])
    assert m.pixel_size_A == pytest.approx(0.2)


def _merge_emd(tmp_path, titles):
    """One NCEM EMD holding several image signals (rsciio writes one per file)."""
    datas = {}
    for i, title in enumerate(titles):
        datas[title] = image((20, 24)) + i
        write_emd(tmp_path / f"part{i}.emd", datas[title], title=title)
    out = tmp_path / "multi.emd"
    (tmp_path / "part0.emd").rename(out)
    with h5py.File(out, "a") as dst:
        for i, title in enumerate(titles[1:], start=1):
            with h5py.File(tmp_path / f"part{i}.emd", "r") as src:
                src.copy(src[f"signals/{title}"], dst["signals"], name=title)
    return out, datas


def test_emd_several_signals_picks_haadf(tmp_path):
    path, datas = _merge_emd(tmp_path, ["BF", "HAADF", "DF4"])
    m = read_micrograph(path)
    np.testing.assert_array_equal(m.image, datas["HAADF"])
    assert m.metadata["title"] == "HAADF" and m.metadata["n_signals"] == 3


def test_emd_several_signals_without_adf_lists_titles(tmp_path):
    path, _ = _merge_emd(tmp_path, ["BF", "ABF"])
    with pytest.raises(MicrographError, match=r"multi\.emd: 2 image signals \(.*'ABF'.*\)"):
        read_micrograph(path)


def test_velox_like_signals_choose_haadf(tmp_path, monkeypatch):
    """A Velox EMD as rsciio returns it: EDS spectrum, BF/DF4/HAADF images, an element map."""
    import rsciio.emd

    def ax(name, size, scale, units, navigate=False):
        return dict(name=name, size=size, scale=scale, offset=0.0, units=units, navigate=navigate)

    haadf = image((20, 24))

    def signal(title, data, axes):
        return dict(data=data, axes=axes, metadata={"General": {"title": title}})

    img_axes = [ax("y", 20, 19.3, "pm"), ax("x", 24, 19.3, "pm")]
    signals = [
        signal("EDS", RNG.random(100), [ax("Energy", 100, 0.01, "keV")]),
        signal("BF", image((20, 24)), img_axes),
        signal("HAADF", haadf, img_axes),
        signal("DF4", image((20, 24)), img_axes),
    ]
    monkeypatch.setattr(rsciio.emd, "file_reader", lambda *a, **k: signals)
    (tmp_path / "v.emd").write_bytes(b"stub")
    m = read_micrograph(tmp_path / "v.emd")
    np.testing.assert_array_equal(m.image, haadf)
    assert m.pixel_size_A == pytest.approx(0.193)

    signals[2] = signal("Se", image((20, 24)), img_axes)  # element map instead of HAADF
    signals[3] = signal("W", image((20, 24)), img_axes)
    with pytest.raises(MicrographError, match=r"v\.emd: 3 image signals \('BF', 'Se', 'W'\)"):
        read_micrograph(tmp_path / "v.emd")

    signals[:] = [signals[0]]  # only a spectrum
    with pytest.raises(MicrographError, match=r"v\.emd: no 2-D image signal.*'EDS'"):
        read_micrograph(tmp_path / "v.emd")


# ---------------------------------------------------------------------------------- DM3/DM4


@pytest.mark.parametrize("version", [3, 4])
def test_dm_round_trip(tmp_path, version):
    data = image((24, 30))
    path = write_dm(
        tmp_path / f"a.dm{version}", data, (0.0193, 0.0193), ("nm", "nm"), version=version
    )
    m = read_micrograph(path)
    assert m.pixel_size_A == pytest.approx(0.193, rel=1e-6)  # DM stores scales as float32
    np.testing.assert_array_equal(m.image, data)
    assert m.metadata["format"] == f"dm{version}" and m.metadata["title"] == "HAADF"


@pytest.mark.parametrize(
    "units, scale, expected_A", [("µm", 2e-5, 0.2), ("Å", 0.31, 0.31), ("pm", 25.0, 0.25)]
)
def test_dm_units(tmp_path, units, scale, expected_A):
    path = write_dm(tmp_path / "u.dm3", image(), (scale, scale), (units, units))
    assert read_micrograph(path).pixel_size_A == pytest.approx(expected_A, rel=1e-6)


def test_dm_integer_stack(tmp_path):
    stack = (RNG.random((3, 20, 24)) * 3000).astype(np.int16)
    path = write_dm(tmp_path / "s.dm4", stack, (0.5, 0.02, 0.02), ("s", "nm", "nm"), version=4)
    with pytest.raises(MicrographError, match=r"s\.dm4: is a stack of 3 frames; pass frame="):
        read_micrograph(path)
    m = read_micrograph(path, frame=1)
    np.testing.assert_array_equal(m.image, stack[1].astype(np.float32))
    assert m.image.dtype == np.float32 and m.metadata["original_dtype"] == "int16"
    assert m.pixel_size_A == pytest.approx(0.2, rel=1e-6)


def test_dm_uncalibrated_needs_explicit(tmp_path):
    path = write_dm(tmp_path / "u.dm3", image(), (1.0, 1.0), ("", ""))
    with pytest.raises(MicrographError, match=r"u\.dm3: no pixel size.*not lengths"):
        read_micrograph(path)
    assert read_micrograph(path, pixel_size_A=0.2).pixel_size_A == 0.2


def test_dm_diffraction_units_are_not_a_pixel_size(tmp_path):
    path = write_dm(tmp_path / "d.dm3", image(), (0.1, 0.1), ("1/nm", "1/nm"))
    with pytest.raises(MicrographError, match=r"d\.dm3: no pixel size.*'1/nm'"):
        read_micrograph(path)


def test_dm_bad_calibration(tmp_path, caplog):
    path = write_dm(tmp_path / "ns.dm3", image(), (0.02, 0.03), ("nm", "nm"))
    with pytest.raises(MicrographError, match=r"ns\.dm3: non-square pixels"):
        read_micrograph(path)
    with caplog.at_level(logging.WARNING, logger="stemjax.io.micrograph"):
        assert read_micrograph(path, pixel_size_A=0.2).pixel_size_A == 0.2
    assert any("non-square" in r.getMessage() for r in caplog.records)
    path = write_dm(tmp_path / "z.dm3", image(), (0.0, 0.0), ("nm", "nm"))
    with pytest.raises(MicrographError, match=r"z\.dm3: the file's pixel size .*not positive"):
        read_micrograph(path)


# ---------------------------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    with pytest.raises(MicrographError, match=r"nope\.tif: file not found"):
        read_micrograph(tmp_path / "nope.tif")


def test_unknown_suffix_lists_supported(tmp_path):
    (tmp_path / "a.png").write_bytes(b"\x89PNG")
    with pytest.raises(MicrographError, match=r"a\.png: unsupported file type '\.png'") as e:
        read_micrograph(tmp_path / "a.png")
    assert all(s in str(e.value) for s in SUPPORTED_SUFFIXES)


@pytest.mark.parametrize("suffix", [".dm3", ".dm4", ".emd", ".tif", ".npy"])
def test_corrupt_file_is_wrapped(tmp_path, suffix):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"this is not a micrograph" * 10)
    with pytest.raises(MicrographError, match=rf"bad\{suffix}: could not read as") as e:
        read_micrograph(path, pixel_size_A=0.2)
    assert e.value.__cause__ is not None


@pytest.mark.parametrize("shape", [(64,), (2, 3, 20, 24)])
def test_not_2d(tmp_path, shape):
    np.save(tmp_path / "n.npy", image(shape))
    with pytest.raises(MicrographError, match=r"n\.npy: expected a 2-D image"):
        read_micrograph(tmp_path / "n.npy", pixel_size_A=0.2)


def test_non_finite_pixels_counted_and_located(tmp_path):
    data = image()
    data[3, 5] = np.nan
    data[10, 1] = np.inf
    np.save(tmp_path / "nan.npy", data)
    with pytest.raises(
        MicrographError, match=r"nan\.npy: 2 non-finite pixels \(NaN/Inf\), first at .*\(3, 5\)"
    ):
        read_micrograph(tmp_path / "nan.npy", pixel_size_A=0.2)


def test_constant_image(tmp_path):
    np.save(tmp_path / "c.npy", np.full((32, 32), 7, np.uint8))
    with pytest.raises(MicrographError, match=r"c\.npy: image is constant"):
        read_micrograph(tmp_path / "c.npy", pixel_size_A=0.2)


@pytest.mark.parametrize("bad", [0.0, -0.2, float("nan"), float("inf")])
def test_bad_explicit_pixel_size(tmp_path, bad):
    np.save(tmp_path / "a.npy", image())
    with pytest.raises(MicrographError, match=r"a\.npy: pixel_size_A must be positive and finite"):
        read_micrograph(tmp_path / "a.npy", pixel_size_A=bad)


def test_too_small(tmp_path):
    np.save(tmp_path / "s.npy", image((8, 40)))
    with pytest.raises(MicrographError, match=r"s\.npy: image is 8×40 px, too small.*16×16"):
        read_micrograph(tmp_path / "s.npy", pixel_size_A=0.2)


def test_complex_rejected(tmp_path):
    np.save(tmp_path / "z.npy", image().astype(np.complex64))
    with pytest.raises(MicrographError, match=r"z\.npy: complex-valued image"):
        read_micrograph(tmp_path / "z.npy", pixel_size_A=0.2)


def test_frame_on_single_image(tmp_path):
    np.save(tmp_path / "a.npy", image())
    assert read_micrograph(tmp_path / "a.npy", pixel_size_A=0.2, frame=0).frame is None
    with pytest.raises(MicrographError, match=r"a\.npy: frame=1 out of range.*single 2-D"):
        read_micrograph(tmp_path / "a.npy", pixel_size_A=0.2, frame=1)


def test_as_micrograph():
    data = (RNG.random((20, 20)) * 100).astype(np.int32)
    m = as_micrograph(data, pixel_size_A=0.2, name="sim")
    assert m.image.dtype == np.float32 and m.path is None and m.pixel_size_A == 0.2
    np.testing.assert_array_equal(m.image, data)
    with pytest.raises(MicrographError, match=r"^sim: image is constant"):
        as_micrograph(np.ones((20, 20)), pixel_size_A=0.2, name="sim")
    with pytest.raises(MicrographError, match=r"^array: pixel_size_A must be positive"):
        as_micrograph(data, pixel_size_A=-1)
    with pytest.raises(MicrographError, match=r"^array: expected a 2-D image"):
        as_micrograph(data[None], pixel_size_A=0.2)


# ---------------------------------------------------------------------------------- resample


def test_resample_identity_returns_equal_copy():
    data = image()
    out = resample_to_pixel_size(data, 0.2, 0.2 * (1 + 1e-8))
    np.testing.assert_array_equal(out, data)
    assert out is not data and out.dtype == np.float32


@pytest.mark.parametrize("old, new", [(0.1, 0.17), (0.17, 0.1), (0.1, 0.2)])
def test_resample_preserves_field_of_view(old, new):
    data = image((100, 131))
    out = resample_to_pixel_size(data, old, new)
    assert out.shape == tuple(round(n * old / new) for n in data.shape)
    for n_in, n_out in zip(data.shape, out.shape, strict=True):
        assert abs(n_out * new - n_in * old) <= 0.5 * new + 1e-12  # FOV within half a new px


def _blob(shape, r0, c0, sigma):
    r, c = np.indices(shape, dtype=np.float64)
    return np.exp(-((r - r0) ** 2 + (c - c0) ** 2) / (2 * sigma**2))


def _centroid(img, r0, c0, half):
    r, c = int(round(r0)), int(round(c0))
    win = img[r - half : r + half + 1, c - half : c + half + 1].astype(np.float64)
    rr, cc = np.indices(win.shape)
    return (rr * win).sum() / win.sum() + r - half, (cc * win).sum() / win.sum() + c - half


@pytest.mark.parametrize("old, new", [(0.1, 0.17), (0.1, 0.3), (0.17, 0.1)])
def test_resample_blob_centroid_maps_to_scaled_index(old, new):
    r0, c0 = 40.3, 57.8
    out = resample_to_pixel_size(_blob((96, 120), r0, c0, 3.0), old, new)
    expected = (r0 * old / new, c0 * old / new)
    half = int(np.ceil(4 * 3.0 * old / new)) + 2  # ±4σ in output px
    got = _centroid(out, *expected, half)
    assert got == pytest.approx(expected, abs=0.05)


def _sine_fit(values, positions, k):
    """Amplitudes (sin, cos) of frequency k (cycles per input px) at input positions."""
    basis = np.stack(
        [
            np.sin(2 * np.pi * k * positions),
            np.cos(2 * np.pi * k * positions),
            np.ones_like(positions),
        ],
        axis=1,
    )
    coef, *_ = np.linalg.lstsq(basis, values, rcond=None)
    return coef[:2]


@pytest.mark.parametrize("old, new, k_new", [(0.1, 0.2, 0.3), (0.1, 0.17, 0.35), (0.1, 0.45, 0.2)])
def test_resample_keeps_sub_nyquist_sine_amplitude(old, new, k_new):
    """A sine at k_new cycles/new px (< 0.5) keeps amplitude and phase within 2 %."""
    f = new / old
    k_in = k_new / f  # cycles per input px
    h, w = 48, 400
    cols = np.arange(w, dtype=np.float64)
    data = np.broadcast_to(np.sin(2 * np.pi * k_in * cols + 0.4), (h, w)).astype(np.float32)
    out = resample_to_pixel_size(data, old, new)
    margin = 12  # new px; the mirror extension's kink at the edges rings a little
    row = out[out.shape[0] // 2, margin:-margin].astype(np.float64)
    pos_in = np.arange(margin, out.shape[1] - margin) * f  # output column → input column
    s, c = _sine_fit(row, pos_in, k_in)
    assert np.hypot(s, c) == pytest.approx(1.0, abs=0.02)
    assert np.arctan2(c, s) == pytest.approx(0.4, abs=0.02)  # phase: pixel centres aligned


def test_resample_suppresses_aliasing():
    """A sine above the new Nyquist frequency (0.7 cycles/new px) is removed, not aliased."""
    old, new = 0.1, 0.2
    k_in = 0.7 / 2.0
    cols = np.arange(300, dtype=np.float64)
    data = np.broadcast_to(np.sin(2 * np.pi * k_in * cols), (32, 300)).astype(np.float32)
    out = resample_to_pixel_size(data, old, new)
    interior = out[:, 10:-10]
    assert np.abs(interior).max() < 0.02
    naive = data[:, ::2]  # what plain decimation would give: a full-amplitude alias
    assert np.abs(naive).max() > 0.9
