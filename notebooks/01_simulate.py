# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 — Simulate an ADF-STEM micrograph of WSe2 with point defects
#
# This walkthrough builds a WSe2 monolayer with ASE, puts a few point defects into it,
# simulates an annular dark-field (ADF) STEM image with stemjax's differentiable multislice
# simulator, and looks at it: the image with a scale bar, a line profile across W and Se2
# columns, and how defocus (C10) and the finite source size change the image. It ends with
# the *training-data* view: the randomly sampled, corrupted images and class maps that the
# defect-detection network is trained on.
#
# Runs on a CPU in a few minutes at the default sizes (most of it planning the training-data
# simulation, section 5), in under a minute in small mode. Environment variables:
#
# - `STEMJAX_NOTEBOOK_SMALL=1`: smaller cells and training images (what CI runs);
# - `STEMJAX_NOTEBOOK_OUT`: folder for the figures (default `notebooks/_output`).

# %%
import os
import time
from pathlib import Path

import ase.build
import matplotlib
import numpy as np

try:  # inside Jupyter / IPython: show figures inline
    get_ipython  # noqa: B018
    from IPython.display import display

    INTERACTIVE = True
except NameError:  # plain `python notebooks/01_simulate.py`: only write the PNGs
    matplotlib.use("Agg")
    INTERACTIVE = False
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402
from scipy import ndimage  # noqa: E402

from stemjax import simulate_adf  # noqa: E402

SMALL = os.environ.get("STEMJAX_NOTEBOOK_SMALL", "0") not in ("", "0")


def repo_root() -> Path:
    """The repository root (this notebook may be run from the root or from notebooks/)."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "stemjax").is_dir():
            return p
    return here


OUT = Path(os.environ.get("STEMJAX_NOTEBOOK_OUT") or repo_root() / "notebooks" / "_output")
OUT.mkdir(parents=True, exist_ok=True)
T_START = time.perf_counter()


def show(fig, name: str) -> None:
    """Save `fig` as OUT/name.png; display it when running inside Jupyter."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    print(f"figure: {path}")
    if INTERACTIVE:
        display(fig)
    plt.close(fig)


print(f"small mode: {SMALL}; figures go to {OUT}")

# %% [markdown]
# ## 1. A WSe2 monolayer with defects
#
# `ase.build.mx2` gives the hexagonal 2H unit cell (W at the origin, the two Se of a column
# at ±1.67 Å above and below it, 3.297 Å lattice constant). `simulate_adf` needs an
# **orthogonal** cell, periodic in x and y: the supercell [[1, 0, 0], [1, 2, 0], [0, 0, 1]] is
# a × √3·a with two formula units, which we repeat.
#
# Seen along the beam, the lattice is a honeycomb of W columns (Z = 74) and Se2 columns (two
# Se atoms, Z = 34 each). Lines along y (the armchair direction) cross W and Se2 columns
# alternately; we put the defects on one such line so that a single line profile crosses
# them:
#
# | column | what we do | Σ Z^1.7 (Z-contrast rule of thumb) |
# |---|---|---|
# | Se2, W | pristine | 800, 1500 |
# | SV | remove one Se of a Se2 column | 400 |
# | 2Te | replace both Se of a column by Te (Z = 52) | 1650 |
# | VW | remove a W atom | 0 |
# | SeTe | replace one Se by Te (on a neighbouring line) | 1230 |
#
# Section 3 compares these numbers with the simulated image.

# %%
A = 3.297  # Å
CELLS = (2, 3) if SMALL else (4, 3)  # orthogonal cells along x, y

unit = ase.build.mx2("WSe2", a=A, thickness=3.34, vacuum=2)
atoms = ase.build.make_supercell(unit, [[1, 0, 0], [1, 2, 0], [0, 0, 1]]) * (*CELLS, 1)
atoms.wrap()
extent = np.diag(atoms.cell.array)[:2]  # (Lx, Ly) in Å
print(f"{len(atoms)} atoms, cell {extent[0]:.2f} × {extent[1]:.2f} Å")


def columns(atoms):
    """Atomic columns: (x, y) in Å, element, and the atom indices in each column."""
    xy = np.round(atoms.positions[:, :2], 3)
    symbols = np.array(atoms.get_chemical_symbols())
    keys = {}
    for i, (p, s) in enumerate(zip(map(tuple, xy), symbols, strict=True)):
        keys.setdefault((p, s), []).append(i)
    return [(np.array(p), s, idx) for (p, s), idx in keys.items()]


cols = columns(atoms)
# the armchair line through the middle of the cell: W and Se2 columns alternate along y
x_line = min({c[0][0] for c in cols if c[1] == "Se"}, key=lambda x: abs(x - extent[0] / 2))
on_line = sorted((c for c in cols if abs(c[0][0] - x_line) < 1e-3), key=lambda c: c[0][1])
se_line = [c for c in on_line if c[1] == "Se"]
w_line = [c for c in on_line if c[1] == "W"]
# a Se2 column on the neighbouring line, for the single substitution
x_next = x_line + A if x_line + A < extent[0] else x_line - A
se_next = sorted(
    (c for c in cols if c[1] == "Se" and abs(c[0][0] - x_next) < 1e-3), key=lambda c: c[0][1]
)

symbols = np.array(atoms.get_chemical_symbols())
remove = []
defects = []  # (name, x, y) in Å, for the figures
remove.append(se_line[1][2][0])  # SV: one of the two Se atoms
defects.append(("SV", *se_line[1][0]))
symbols[se_line[2][2]] = "Te"  # 2Te: both Se atoms
defects.append(("2Te", *se_line[2][0]))
remove.append(w_line[2][2][0])  # VW
defects.append(("VW", *w_line[2][0]))
symbols[se_next[1][2][0]] = "Te"  # SeTe: one Se atom
defects.append(("SeTe", *se_next[1][0]))
atoms.set_chemical_symbols(list(symbols))
del atoms[sorted(remove)]
print(f"{len(atoms)} atoms after the defects; formula {atoms.get_chemical_formula()}")
for name, x, y in defects:
    print(f"  {name:5s} at x = {x:6.2f} Å, y = {y:6.2f} Å")

# %% [markdown]
# ## 2. Simulate the ADF image
#
# 80 kV, 25 mrad probe semiangle, ADF detector 60–200 mrad, one probe position every ≤ 0.2 Å
# (`scan_sampling`; the scan has n = ⌈L / 0.2⌉ positions per axis, spaced L / n from the cell
# origin). The source size (partial spatial coherence) is a Gaussian of σ = 0.4 Å. The result
# is a NumPy array (n_x, n_y), axis 0 along x, in fractions of the incident beam intensity.
#
# The first call compiles the simulator for this cell (a few seconds); calls with other
# microscope parameters reuse it.

# %%
SIM = {
    "energy": 80e3,  # eV
    "semiangle_cutoff": 25,  # mrad
    "detector": (60, 200),  # mrad
    "scan_sampling": 0.2,  # Å
}
t0 = time.perf_counter()
image = simulate_adf(atoms, **SIM, source_size=0.4)
print(
    f"{image.shape[0]} × {image.shape[1]} probe positions in {time.perf_counter() - t0:.1f} s; "
    f"ADF signal {image.min():.4f}–{image.max():.4f} of the beam"
)
step = extent / np.array(image.shape)  # Å per probe position along x, y


def image_extent(shape, extent):
    """imshow extent (Å) placing pixel (i, j) centre at (i·Lx/nx, j·Ly/ny)."""
    dx, dy = extent / np.array(shape)
    return (-dx / 2, extent[0] - dx / 2, -dy / 2, extent[1] - dy / 2)


def scale_bar(ax, length: float, label: str, color="white"):
    """Scale bar of `length` in the axes' data units, labelled `label`."""
    bar = AnchoredSizeBar(
        ax.transData,
        length,
        label,
        "lower right",
        pad=0.4,
        color=color,
        frameon=False,
        size_vertical=length / 20,
    )
    ax.add_artist(bar)


def show_adf(ax, img, title, vmin=None, vmax=None):
    im = ax.imshow(
        img.T,
        origin="lower",
        cmap="gray",
        extent=image_extent(img.shape, extent),
        vmin=vmin,
        vmax=vmax,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize="medium")
    scale_bar(ax, 5.0, "5 Å")  # axes in Å
    return im


fig, ax = plt.subplots(figsize=(5.5, 5.5 * extent[1] / extent[0] + 0.5))
im = show_adf(ax, image, "WSe2, 80 kV, 25 mrad, ADF 60–200 mrad")
for name, x, y in defects:
    ax.annotate(
        name,
        (x, y),
        xytext=(x + 1.2, y + 0.9),
        color="orange",
        fontsize=9,
        arrowprops={"arrowstyle": "-", "color": "orange"},
    )
ax.axvline(x_line, color="C0", lw=0.8, ls="--")
fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of incident beam")
fig.tight_layout()
show(fig, "01_adf_image")

# %% [markdown]
# ## 3. Line profile across W and Se2 columns
#
# Along the dashed line W and Se2 columns alternate (1.90 Å apart, then a 3.81 Å gap). The
# rule of thumb for incoherent Z-contrast (signal ∝ Σ Z^1.7 over the atoms of a column)
# would make a W column (74^1.7 ≈ 1500) about twice as bright as a Se2 column
# (2 × 34^1.7 ≈ 800). The multislice image says otherwise: at these settings W and Se2 peaks
# come out nearly equal, and abTEM, an independent multislice code, agrees (W/Se2 ≈ 0.99,
# `benchmarks/RESULTS.md`): the rule of thumb is a rough guide only. Within the chalcogen
# columns the ordering is as expected: one Se (SV) gives less than half of Se2, Te2 is the
# brightest column, and the W vacancy leaves only the tails of the neighbouring columns.
# The peak ratios printed below are measured on this image.

# %%
y_profile = np.linspace(0, extent[1], 600, endpoint=False)
coords = np.stack([np.full_like(y_profile, x_line / step[0]), y_profile / step[1]])
profile = ndimage.map_coordinates(image, coords, order=3, mode="grid-wrap")

fig, ax = plt.subplots(figsize=(8, 3.2))
ax.plot(y_profile, profile, color="k", lw=1.2)
label_of = {tuple(np.round((x, y), 3)): n for n, x, y in defects}
peaks = []  # (name, y, peak value)
for (x, y), element, _ in on_line:
    name = label_of.get(tuple(np.round((x, y), 3)), "W" if element == "W" else "Se2")
    near = np.abs(y_profile - y) < 0.4  # Å
    peaks.append((name, y, float(profile[near].max())))
    color = "C3" if name in label_of.values() else ("C0" if element == "W" else "C2")
    ax.axvline(y, color=color, lw=0.8, ls=":")
    ax.text(y, profile.max() * 1.04, name, ha="center", fontsize=8, color=color)
ax.set_ylim(0, profile.max() * 1.12)
ax.set_xlim(0, extent[1])
ax.set_xlabel("y along the armchair line (Å)")
ax.set_ylabel("ADF signal (fraction of beam)")
ax.set_title(f"line profile at x = {x_line:.2f} Å")
fig.tight_layout()
se2_peak = np.mean([v for n, _, v in peaks if n == "Se2"])
for name, y, value in peaks:
    print(f"  y = {y:5.2f} Å  {name:4s} peak {value:.4f}  ({value / se2_peak:.2f} × Se2)")
show(fig, "01_line_profile")

# %% [markdown]
# ## 4. Defocus and source size
#
# Both are plain arguments of `simulate_adf` (and, at the array level, differentiable inputs
# of `stemjax.adf_image`). Aberrations use Krivanek notation in Å: C10 = −defocus. With a
# 25 mrad probe at 80 kV the depth of field is only ~λ/α² ≈ 7 nm, so a few nm of defocus
# already spread the probe; a larger source (σ, Å) blurs the image and lowers the contrast.
# Each row shares one colour scale, so the loss of contrast is visible.

# %%
# Å (C10 = −defocus) and Å (1σ); the image above is the one at defocus 0, σ = 0.4 Å
defocus_values = (0.0, 80.0) if SMALL else (0.0, 40.0, 80.0)
source_values = (0.4, 0.8) if SMALL else (0.0, 0.4, 0.8)
t0 = time.perf_counter()
by_defocus = [
    image  # the image above: no defocus, σ = 0.4 Å
    if df == 0
    else simulate_adf(atoms, **SIM, aberrations={"C10": -df}, source_size=0.4)
    for df in defocus_values
]
by_source = [
    image if s == 0.4 else simulate_adf(atoms, **SIM, source_size=s) for s in source_values
]
print(f"simulated in {time.perf_counter() - t0:.1f} s")

ncols = len(defocus_values)
fig, axes = plt.subplots(2, ncols, figsize=(3.4 * ncols, 2 * 3.3 * extent[1] / extent[0] + 0.8))
for row, (images, labels) in enumerate(
    (
        (by_defocus, [f"defocus {df:g} Å (C10 = {-df + 0.0:g} Å)" for df in defocus_values]),
        (by_source, [f"source size σ = {s:g} Å" for s in source_values]),
    )
):
    vmin = min(float(i.min()) for i in images)
    vmax = max(float(i.max()) for i in images)
    for ax, img, label in zip(axes[row], images, labels, strict=True):
        contrast = (img.max() - img.min()) / (img.max() + img.min())
        show_adf(ax, img, f"{label}\nMichelson contrast {contrast:.2f}", vmin, vmax)
fig.tight_layout()
show(fig, "01_defocus_source_size")

# %% [markdown]
# ## 5. The training-data view
#
# The detection network never sees a hand-built cell like the one above. Each training batch
# is sampled on the fly, on the device: a random WSe2(1−x)Te2x specimen with random defects
# (`conf/specimen/`; the `train` prior used here oversamples the rare classes), a random
# microscope (`conf/microscope/`: defocus, astigmatism, coma, Cs, source size, dose), the
# clean ADF image, then the corruption of real data (`conf/corruption/`: drift, scan jitter,
# flyback, probe-current changes, Poisson noise, detector gain/offset/noise, contamination)
# and the per-pixel target class map. The warp that distorts the image moves the labels
# with it.
#
# `load_config` composes the Hydra configuration (`conf/config.yaml` and its groups) with
# overrides; `to_runtime` turns it into plain objects; `build_batch_maker` plans once on the
# host (here the column responses of the CPU fast mode: ~10 s with `data=small`, 1–2 min
# with the default data config on a 2-core CPU) and `make_batch(key)` is the jitted device
# function. The same key always gives the same batch.

# %%
import jax  # noqa: E402

from stemjax.config import load_config, to_runtime  # noqa: E402
from stemjax.trainingdata.pipeline import build_batch_maker  # noqa: E402

overrides = ["data=small"] if SMALL else ["data.batch_size=2"]
cfg = load_config(overrides)
t0 = time.perf_counter()
maker = build_batch_maker(*to_runtime(cfg))
print(f"planned in {time.perf_counter() - t0:.1f} s ({maker.data.simulation} simulation)")
t0 = time.perf_counter()
batch = jax.device_get(maker.make_batch(jax.random.key(0)))
print(
    f"batch of {batch.images.shape[0]} images {batch.images.shape[1:]} "
    f"in {time.perf_counter() - t0:.1f} s (includes compilation)"
)
names = maker.registry.names
print("classes:", names)
print(f"pixel size {maker.pixel_size} Å/px; image 0 drew:")
print(
    f"dose {float(batch.dose[0]):.0f} e⁻/px, defocus {float(batch.defocus[0]):+.1f} Å, "
    f"source size σ {float(batch.source_size[0]):.3f} Å, |C12| {float(batch.c12[0]):.1f} Å"
)

# %% [markdown]
# Left: the corrupted, normalised image the network sees. Middle: its target, the class of
# each pixel (a disk around every defect column; 'none' elsewhere). Right: the clean
# simulated signal, warped like the image but without noise, gain or contamination. Arrays
# are shown as stored: row = axis 0, label points are (row, col) px.

# %%
i = 0
img, target, clean = batch.images[i], batch.targets[i], batch.clean[i]
pts, cls, valid = batch.points[i], batch.classes[i], batch.valid[i]
px = maker.pixel_size
colours = ["black"] + [plt.get_cmap("tab10")(k % 10) for k in range(len(names) - 1)]
class_cmap = ListedColormap(colours)

fig, axes = plt.subplots(1, 3, figsize=(13, 5.0))
axes[0].imshow(img, cmap="gray")
axes[0].set_title("corrupted, normalised (network input)")
axes[1].imshow(target, cmap=class_cmap, vmin=-0.5, vmax=len(names) - 0.5, interpolation="nearest")
axes[1].set_title("target class map")
axes[2].imshow(clean, cmap="gray")
axes[2].set_title("clean (fraction of beam, warped)")
for k in range(1, len(names)):
    sel = valid & (cls == k)
    axes[0].scatter(pts[sel, 1], pts[sel, 0], s=60, facecolors="none", edgecolors=[colours[k]])
present = sorted({int(k) for k in np.unique(target)} | {0})
axes[1].legend(
    handles=[Patch(color=colours[k], label=names[k]) for k in present],
    fontsize=8,
    loc="upper right",
    framealpha=0.7,
)
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
    bar_A = 5.0 if img.shape[0] * px < 30 else 10.0
    scale_bar(ax, bar_A / px, f"{bar_A:g} Å")  # axes in px here
fig.suptitle(
    f"training data: specimen {cfg.specimen.name}, microscope {cfg.microscope.name}, "
    f"prior {cfg.data.prior}, {maker.data.simulation} simulation"
)
fig.tight_layout(rect=(0, 0, 1, 0.95))
show(fig, "01_training_data")

counts = {names[k]: int((valid & (cls == k)).sum()) for k in range(1, len(names))}
print("defect columns in this image:", counts)
print(f"notebook finished in {time.perf_counter() - T_START:.1f} s")
