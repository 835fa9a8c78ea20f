"""Class averages (stemjax.analysis.class_averages): sub-pixel registration, selection, √N."""

import numpy as np
import pandas as pd
import pytest

from stemjax.analysis import class_averages, plot_class_averages

PS = 0.2  # Å/px
SIZE = 640  # px
A = 3.297  # Å
SIGMA_A = 0.45  # Gaussian blob width, Å
AMP = {"metal": 1.0, "chalcogen": 0.7, "bright": 2.0, "vac": 0.0}
NOISE = 0.3


def lattice(size_px=SIZE, ps=PS):
    """Metal and chalcogen sites (x, y in Å) of a lattice rotated by 7°, covering the field."""
    c, s = np.cos(np.deg2rad(7.0)), np.sin(np.deg2rad(7.0))
    rot = np.array([[c, -s], [s, c]])
    a1, a2 = rot @ [A, 0.0], rot @ [A / 2, A * np.sqrt(3) / 2]
    n = int(size_px * ps / A) + 4
    i, j = np.meshgrid(np.arange(-2 * n, 2 * n), np.arange(-n, 2 * n), indexing="ij")
    base = (i[..., None] * a1 + j[..., None] * a2).reshape(-1, 2) + [0.37, 0.81]
    keep = lambda p: p[((p > -2) & (p < size_px * ps + 2)).all(1)]  # noqa: E731
    return keep(base), keep(base + (a1 + a2) / 3)


METAL, CHALC = lattice()


def render(points_A, amps, rows_A, cols_A):
    """Σ amp · Gaussian(σ) at the grid (rows_A × cols_A), separable: (ny, N) @ (N, nx)."""
    gy = np.exp(-((rows_A[:, None] - points_A[None, :, 1]) ** 2) / (2 * SIGMA_A**2))
    gx = np.exp(-((cols_A[:, None] - points_A[None, :, 0]) ** 2) / (2 * SIGMA_A**2))
    return (gy * amps) @ gx.T


def choose_defects(seed=0):
    """Isolated interior defects (classes alternate), border defects and close pairs."""
    rng = np.random.default_rng(seed)
    px = METAL / PS
    edge = np.minimum(px, SIZE - 1 - px).min(1)
    chosen, kind = [], []

    def free(i, min_A=7.5):
        return all(np.linalg.norm(METAL[i] - METAL[j]) >= min_A for j in chosen)

    for i in rng.permutation(np.flatnonzero(edge >= 40)):
        if len(chosen) < 120 and free(i):
            chosen.append(i)
            kind.append("isolated")
    for i in rng.permutation(np.flatnonzero((edge >= 5) & (edge <= 25)))[:200]:
        if kind.count("border") < 6 and free(i):
            chosen.append(i)
            kind.append("border")
    pairs = 0
    for i in rng.permutation(np.flatnonzero(edge >= 40)):
        d = np.linalg.norm(METAL - METAL[i], axis=1)
        j = np.flatnonzero((d > 1) & (d < A + 0.01))[0]
        if pairs < 3 and edge[j] >= 40 and free(i) and free(j):
            chosen += [i, j]
            kind += ["pair", "pair"]
            pairs += 1
    chosen = np.array(chosen)
    names = np.where(np.arange(len(chosen)) % 2 == 0, "bright", "vac")
    return chosen, np.array(kind), names


CHOSEN, KIND, NAMES = choose_defects()


def isolated_averages(*args, **kwargs):
    """class_averages with the exclusion radius this fixture is built for: the crop radius
    (6 Å; the function's default is 3 Å)."""
    kwargs.setdefault("exclusion_radius_A", 6.0)
    return class_averages(*args, **kwargs)


def make_image(noise=NOISE, seed=0):
    amps = np.full(len(METAL), AMP["metal"])
    amps[CHOSEN] = [AMP[n] for n in NAMES]
    pts = np.vstack([METAL, CHALC])
    grid = np.arange(SIZE) * PS
    img = render(pts, np.concatenate([amps, np.full(len(CHALC), AMP["chalcogen"])]), grid, grid)
    return img + np.random.default_rng(seed).normal(0, noise, img.shape)


def motif(class_name, pixel_A=PS, radius_A=6.0):
    """Noiseless crop around a metal-site defect of `class_name`, centred exactly on it."""
    m = int(np.floor(radius_A / pixel_A + 1e-9))
    centre = METAL[CHOSEN[(KIND == "isolated") & (NAMES == class_name)][0]]
    pts = np.vstack([METAL, CHALC])
    amps = np.concatenate([np.full(len(METAL), AMP["metal"]), np.full(len(CHALC), 0.7)])
    amps[np.argmin(np.linalg.norm(METAL - centre, axis=1))] = AMP[class_name]
    off = np.arange(-m, m + 1) * pixel_A
    return render(pts, amps, centre[1] + off, centre[0] + off)


def motif_in_lattice_frame(class_name, angle_deg, pixel_A=PS, radius_A=6.0):
    """Noiseless crop around a metal-site defect whose +x axis runs along the image direction
    `angle_deg` (from +x towards +y): the crop `rotation_rad` should cut."""
    m = int(np.floor(radius_A / pixel_A + 1e-9))
    centre = METAL[CHOSEN[(KIND == "isolated") & (NAMES == class_name)][0]]
    pts = np.vstack([METAL, CHALC]) - centre
    amps = np.concatenate([np.full(len(METAL), AMP["metal"]), np.full(len(CHALC), 0.7)])
    amps[np.argmin(np.linalg.norm(pts[: len(METAL)], axis=1))] = AMP[class_name]
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    crop_xy = np.stack([pts @ [c, s], pts @ [-s, c]], 1)
    off = np.arange(-m, m + 1) * pixel_A
    return render(crop_xy, amps, off, off)


def defect_table(error_px=None):
    xy_px = METAL[CHOSEN] / PS
    if error_px is not None:
        xy_px = xy_px + error_px
    return pd.DataFrame(
        {
            "image_id": "im",
            "x_px": xy_px[:, 0],
            "y_px": xy_px[:, 1],
            "class_name": NAMES,
            "class_id": np.where(NAMES == "bright", 1, 2),
            "score": 0.9,
        }
    )


def fit_residual(avg, ref):
    """Residual of avg after the least-squares fit a·ref + b (normalisation is affine)."""
    design = np.stack([ref.ravel(), np.ones(ref.size)], 1)
    coef, *_ = np.linalg.lstsq(design, avg.ravel(), rcond=None)
    return avg - (design @ coef).reshape(avg.shape), coef[0]


def corr(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


@pytest.fixture(scope="module")
def noisy():
    return {"im": (make_image(), PS)}


@pytest.fixture(scope="module")
def clean():
    return {"im": (make_image(noise=0.0), PS)}


def expected_count(name, kinds=("isolated",)):
    return int(np.sum(np.isin(KIND, kinds) & (NAMES == name)))


def test_counts_exclude_border_and_crowded_defects(noisy):
    assert expected_count("bright") >= 40 and expected_count("vac") >= 40
    av = isolated_averages(noisy, defect_table())
    assert list(av) == ["bright", "vac"]
    for name in av:
        assert av[name].count == expected_count(name)
        assert av[name].image.shape == (61, 61) and av[name].pixel_size_A == PS
    # pairs 3.3 Å apart are kept once the exclusion radius is below their spacing
    av = isolated_averages(noisy, defect_table(), exclusion_radius_A=3.0, refine_iterations=0)
    assert av["bright"].count == expected_count("bright", ("isolated", "pair"))
    # low scores are dropped
    table = defect_table()
    table.loc[np.flatnonzero((KIND == "isolated") & (NAMES == "vac"))[:5], "score"] = 0.1
    av = isolated_averages(noisy, table, min_score=0.5)
    assert av["vac"].count == expected_count("vac") - 5
    assert av["bright"].count == expected_count("bright")


@pytest.mark.parametrize("upsample", [1, 2])
def test_noiseless_average_is_the_motif_at_subpixel_precision(clean, upsample):
    av = isolated_averages(clean, defect_table(), upsample=upsample, refine_iterations=0)
    for name in ("bright", "vac"):
        ref = motif(name, PS / upsample)
        assert av[name].image.shape == ref.shape
        resid, _ = fit_residual(av[name].image, ref)
        # rounding to whole pixels (0.1 Å errors on σ = 0.45 Å blobs) would give ~10 %
        assert np.sqrt(np.mean(resid**2)) / np.std(av[name].image) < 0.01


@pytest.mark.parametrize("normalise", ["image", "crop"])
def test_noisy_average_recovers_the_motif(noisy, normalise):
    av = isolated_averages(noisy, defect_table(), normalise=normalise)
    for name in ("bright", "vac"):
        assert corr(av[name].image, motif(name)) > 0.95
    assert corr(av["bright"].image, motif("vac")) < corr(av["bright"].image, motif("bright"))
    if normalise == "crop":
        assert abs(av["bright"].image.mean()) < 1e-9


def test_averaging_reduces_noise_by_sqrt_n(noisy):
    table = defect_table()
    ref = motif("vac")
    full = isolated_averages(noisy, table, refine_iterations=0)["vac"]
    subset = table[(KIND != "isolated") | (NAMES != "vac") | (np.arange(len(table)) % 8 == 1)]
    part = isolated_averages(noisy, subset, refine_iterations=0)["vac"]
    assert full.count >= 4 * part.count - 4
    r_full = np.sqrt(np.mean(fit_residual(full.image, ref)[0] ** 2))
    r_part = np.sqrt(np.mean(fit_residual(part.image, ref)[0] ** 2))
    np.testing.assert_allclose(r_part / r_full, np.sqrt(full.count / part.count), rtol=0.25)
    # the reported SEM is the noise left in the average
    np.testing.assert_allclose(full.sem, full.std / np.sqrt(full.count))
    np.testing.assert_allclose(r_full / np.mean(full.sem), 1.0, rtol=0.2)


@pytest.mark.parametrize("angle_deg", [None, 7.0])
def test_refinement_recovers_position_errors(noisy, angle_deg):
    """Also with rotated crops: the shifts come back in the image's (dy, dx)."""
    rotation = None if angle_deg is None else {"im": np.deg2rad(angle_deg)}
    ref = {n: motif(n) if angle_deg is None else motif_in_lattice_frame(n, 7.0) for n in NAMES}
    rng = np.random.default_rng(5)
    error = rng.uniform(-0.4, 0.4, size=(len(CHOSEN), 2))  # (x, y) px
    table = defect_table(error)
    av0 = isolated_averages(noisy, table, refine_iterations=0, rotation_rad=rotation)
    av2 = isolated_averages(noisy, table, refine_iterations=2, rotation_rad=rotation)
    for name in ("bright", "vac"):
        used = np.asarray(av2[name].index)
        assert len(used) >= 20
        true_shift = -error[used][:, ::-1]  # (dy, dx) that undoes the error
        got = av2[name].shifts_px - av2[name].shifts_px.mean(0)  # mean offset is unobservable
        rms = np.sqrt(np.mean((got - (true_shift - true_shift.mean(0))) ** 2))
        assert rms < 0.1 and np.abs(av2[name].shifts_px).max() <= 1.0
        assert corr(av2[name].image, ref[name]) > corr(av0[name].image, ref[name])


def test_rotated_crops_show_the_motif_in_the_lattice_frame(clean):
    """rotation_rad = the lattice's 7° puts a1 along the crop's +x: the noiseless average is the
    motif of the unrotated lattice (a wrong sign would turn it by 14°, the image frame by 7°)."""
    av = isolated_averages(
        clean, defect_table(), refine_iterations=0, rotation_rad={"im": np.deg2rad(7)}
    )
    plain = isolated_averages(clean, defect_table(), refine_iterations=0)
    for name in ("bright", "vac"):
        ref = motif_in_lattice_frame(name, 7.0)
        resid, _ = fit_residual(av[name].image, ref)
        # 1–2 %: spline interpolation off both grid axes, and neighbouring defects ≥ 7.5 Å
        # away that the reference lacks reach into other corners of the rotated crop
        assert np.sqrt(np.mean(resid**2)) / np.std(av[name].image) < 0.02
        wrong, _ = fit_residual(plain[name].image, ref)
        assert np.sqrt(np.mean(wrong**2)) / np.std(plain[name].image) > 0.1
        # the √2 reach of the rotated crop's corners keeps fewer defects, never more
        assert 0 < av[name].count <= plain[name].count
    with pytest.raises(ValueError, match="no finite angle for image 'im'"):
        isolated_averages(clean, defect_table(), rotation_rad={"other": 0.0})


def test_defects_of_unknown_images_raise(noisy):
    with pytest.raises(ValueError, match="not in `images`"):
        isolated_averages(noisy, defect_table().assign(image_id="other"))


def test_plot_class_averages(noisy, tmp_path):
    av = isolated_averages(noisy, defect_table(), refine_iterations=0)
    fig = plot_class_averages(av, classes=[("bright", "metal"), ("vac", "metal"), ("SV", "x")])
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == f"bright\nn = {av['bright'].count}" and titles[2] == "SV\nn = 0"
    assert any(t.get_text() == "2 Å" for t in fig.axes[0].texts)  # 40 % of 12.2 Å → 2 Å
    fig.savefig(tmp_path / "class_averages.png")
    assert (tmp_path / "class_averages.png").stat().st_size > 1000
