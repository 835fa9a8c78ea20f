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
# # 02 — Find and count the defects in a micrograph with a trained model
#
# This walkthrough analyses a large WSe2(1−x)Te2x micrograph end to end with a trained U-Net:
#
# 1. load the model (`stemjax.predict.load_model`);
# 2. make a synthetic micrograph whose defects we know, at realistic rates (the *evaluation*
#    prior: Te substitutions 87 % of the defects, Se vacancies 12 %, W-site defects < 1 %),
#    and write it to a calibrated TIFF, as a microscope would;
# 3. analyse the **file** (`stemjax.predict.predict`): the defect table, counts and
#    concentrations with exact confidence intervals, density maps, spatial statistics
#    (clustered or random?) and class-averaged images;
# 4. score the detections against the known truth (recall, precision, confusion).
#
# For your own data, skip step 2 and pass your `.dm3/.dm4/.emd/.tif/.npy` files to `predict`.
#
# **How good are the numbers?** Everything below is only as good as the checkpoint. The model
# shipped in `experiments/wse2te/model` was trained on a CPU (a small U-Net, `trainer=cpu`); its
# measured accuracy on the evaluation prior is reported in `experiments/wse2te/REPORT.md`.
# Section 4 measures it again on this one image. With an untrained or early checkpoint the
# notebook still runs, but the detections are meaningless.
#
# Environment variables:
#
# - `STEMJAX_MODEL`: the model, a run directory (`.hydra/config.yaml` or `config.yaml`, and
#   `checkpoints/`); default `experiments/wse2te/model`. Any training run directory works,
#   also one that is still training (its best, else latest, checkpoint so far is used);
# - `STEMJAX_NOTEBOOK_SMALL=1`: a 512 px micrograph instead of 1024 px (what CI runs);
# - `STEMJAX_NOTEBOOK_OUT`: folder for the figures and the TIFF (default `notebooks/_output`).

# %%
import os
import time
from pathlib import Path

T_START = time.perf_counter()
SMALL = os.environ.get("STEMJAX_NOTEBOOK_SMALL", "0") not in ("", "0")


def repo_root() -> Path:
    """The repository root (this notebook may be run from the root or from notebooks/)."""
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "pyproject.toml").is_file() and (p / "stemjax").is_dir():
            return p
    return here


ROOT = repo_root()
OUT = Path(os.environ.get("STEMJAX_NOTEBOOK_OUT") or ROOT / "notebooks" / "_output")
MODEL = Path(os.environ.get("STEMJAX_MODEL") or ROOT / "experiments" / "wse2te" / "model")
if not MODEL.exists():  # check first: everything below needs it
    raise FileNotFoundError(
        f"no trained model at {MODEL}. Set STEMJAX_MODEL to a stemjax run directory (with "
        "`.hydra/config.yaml` or `config.yaml`, and `checkpoints/`), e.g. what "
        "`python -m stemjax.train +experiment=wse2te trainer=cpu` writes under outputs/train/."
    )
OUT.mkdir(parents=True, exist_ok=True)
print(f"small mode: {SMALL}; model {MODEL}; outputs go to {OUT}")

# %%
import jax  # noqa: E402
import matplotlib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

try:  # inside Jupyter / IPython: show figures and tables inline
    get_ipython  # noqa: B018
    from IPython.display import display

    INTERACTIVE = True
except NameError:  # plain `python notebooks/02_analyse_micrograph.py`: print, write PNGs
    matplotlib.use("Agg")
    INTERACTIVE = False

    def display(obj):
        print(obj.to_string() if isinstance(obj, pd.DataFrame) else obj)


import matplotlib.pyplot as plt  # noqa: E402
from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar  # noqa: E402

from stemjax import analysis  # noqa: E402
from stemjax.config import load_config, to_runtime  # noqa: E402
from stemjax.evaluation import evaluate, format_report, match_detections  # noqa: E402
from stemjax.io import write_tif  # noqa: E402
from stemjax.predict import EDGE_A, load_model, predict  # noqa: E402
from stemjax.trainingdata.pipeline import build_batch_maker  # noqa: E402

pd.set_option("display.width", 120)
pd.set_option("display.max_columns", 20)


def show(fig, name: str) -> None:
    """Save `fig` as OUT/name.png; display it when running inside Jupyter."""
    path = OUT / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    print(f"figure: {path}")
    if INTERACTIVE:
        display(fig)
    plt.close(fig)


# %% [markdown]
# ## 1. The model
#
# `load_model` takes a run directory as `python -m stemjax.train` writes it (or its
# `checkpoints/`, or one `checkpoints/<step>`), and picks the checkpoint with the best
# validation F1 (else the latest). The run's config gives the architecture, the defect
# classes and the pixel size the model was trained at (micrographs are resampled to it).

# %%
t0 = time.perf_counter()
model = load_model(MODEL)
registry = model.registry
print(f"loaded {model.source} (step {model.step}) in {time.perf_counter() - t0:.1f} s")
print(f"trained at {model.pixel_size_A} Å/px on {model.image_px} px images")
print("classes:", [(c.name, c.sublattice) for c in registry.classes])

# %% [markdown]
# ## 2. A synthetic micrograph with known defects
#
# The training-data generator also makes test images: with `data.prior=eval` it samples the
# realistic defect rates of `conf/specimen/wse2te.yaml`, a random microscope state from
# `conf/microscope/wse2te.yaml` (the settings the wse2te model is trained for) and all the
# corruptions of real data (drift, scan distortions, noise, contamination). One image of
# N × N px at 0.2074 Å/px (N = 1024 is a 21 nm field of view). The batch carries the truth:
# every lattice site's position (row, col px), class (0 = pristine), sublattice, and whether
# it lies inside the image.
#
# Planning (the column responses of the CPU simulation mode) takes a while on a CPU: 1–2 min
# on 2 cores with the default data config. Small mode uses `data=small`'s coarser responses
# (one phonon configuration, 10 Å cells; ~10 s).

# %%
N = 512 if SMALL else 1024
overrides = [f"data.image_size_px={N}", "data.batch_size=1", "data.prior=eval"]
if SMALL:
    overrides = ["data=small", *overrides]  # coarser column responses: faster planning
cfg = load_config(overrides)
t0 = time.perf_counter()
maker = build_batch_maker(*to_runtime(cfg))
batch = jax.device_get(maker.make_batch(jax.random.key(2024)))
print(f"simulated a {N} × {N} px micrograph in {time.perf_counter() - t0:.1f} s")
px = maker.pixel_size  # Å/px
if abs(px - model.pixel_size_A) > 1e-6:
    print(f"note: micrograph at {px} Å/px, model at {model.pixel_size_A} Å/px (predict resamples)")

image = np.asarray(batch.images[0])
# `predict` drops defects and sites within EDGE_A (0.6 Å) of the edge (a column centred there is
# partly cut off): the truth below is the same region.
edge_px = EDGE_A / px
points = np.asarray(batch.points[0])
in_region = np.asarray(batch.valid[0]) & np.all(
    (points >= edge_px) & (points <= N - 1 - edge_px), axis=1
)
truth_valid = in_region & (np.asarray(batch.classes[0]) > 0)
truth = pd.DataFrame(
    {
        "y_A": batch.points[0][truth_valid, 0] * px,  # rows
        "x_A": batch.points[0][truth_valid, 1] * px,  # columns
        "class_id": batch.classes[0][truth_valid],
    }
)
truth["class_name"] = np.asarray(registry.names, dtype=object)[truth["class_id"]]
n_sites = int(in_region.sum())
print(f"{n_sites} lattice sites in the image (≥ {EDGE_A} Å from its edges), {len(truth)} defects")

tif = write_tif(OUT / "synthetic_wse2te.tif", image, px, overwrite=True)
print(f"wrote {tif} ({px} Å/px stored as the ImageJ calibration)")

# %%
extent_A = (-0.5 * px, (N - 0.5) * px, (N - 0.5) * px, -0.5 * px)  # x along columns, y down


def scale_bar(ax, length_A: float, color="white"):
    ax.add_artist(
        AnchoredSizeBar(
            ax.transData,
            length_A,
            f"{length_A / 10:g} nm" if length_A >= 10 else f"{length_A:g} Å",
            "lower right",
            pad=0.4,
            color=color,
            frameon=False,
            size_vertical=length_A / 25,
        )
    )


ZOOM_A = 40.0  # Å, the zoomed panel
zoom = (N * px / 2 - ZOOM_A / 2, N * px / 2 + ZOOM_A / 2)

fig, axes = plt.subplots(1, 2, figsize=(12, 6))
for ax, lim in zip(axes, (None, zoom), strict=True):
    ax.imshow(
        image,
        cmap="gray",
        extent=extent_A,
        vmin=np.percentile(image, 0.5),
        vmax=np.percentile(image, 99.5),
    )
    if lim is not None:
        ax.set_xlim(*lim)
        ax.set_ylim(lim[1], lim[0])
    ax.set_xticks([])
    ax.set_yticks([])
    scale_bar(ax, 50.0 if lim is None else 5.0)
axes[0].add_patch(
    plt.Rectangle((zoom[0], zoom[0]), ZOOM_A, ZOOM_A, fill=False, color="orange", lw=1)
)
axes[0].set_title(f"synthetic micrograph, {N} × {N} px at {px} Å/px")
axes[1].set_title(f"centre, {ZOOM_A:g} Å")
fig.tight_layout()
show(fig, "02_micrograph")

# %% [markdown]
# ## 3. Analyse the file
#
# `predict` reads the file (and its pixel size), resamples it to the model's pixel size,
# normalises it like the training images, runs the network over overlapping tiles (bounded
# memory, no seams), and decodes one row per defect. It also finds every atomic column and
# assigns it to the metal or chalcogen sublattice: these *sites* are the denominators of the
# concentrations and the null model of the spatial statistics.
#
# Table coordinates: x along columns, y along rows (down), origin at the centre of the top-left
# pixel, in px of the micrograph as given (`x_px`, `y_px`) and in Å (`x_A`, `y_A`); `score` is
# the network's defect probability at the peak. Each defect's class is the most probable one of
# the sublattice its site sits on (from the geometry of the neighbouring columns);
# `network_class_name` keeps the network's own call.
#
# The network was trained with the rare classes oversampled; `site_prior` says which defect
# rates to expect here. The shipped model's default is `"estimate"` (the rates of a first pass
# over your data; the network runs twice); `site_prior="eval"` assumes the seed's realistic
# rates (one pass), and `site_prior="train"` keeps the network's own odds. For micrographs from
# a poorly tuned microscope (strong defocus, large source, residual aberrations) pass
# `tta=True`: the 8 symmetries of the square are averaged (8× the network time, with the
# model's own TTA threshold), which halves the false detections there.

# %%
t0 = time.perf_counter()
result = predict(model, [tif], progress=False)
print(f"predicted in {time.perf_counter() - t0:.1f} s")
defects, sites = result.defects, result.sites
image_id = result.fields.index[0]
display(defects.head())
display(result.fields)
print(f"{len(defects)} defects, {len(sites)} lattice sites found; "
      f"{(defects['class_name'] != defects['network_class_name']).sum()} moved to their site's "
      "sublattice")

# %% [markdown]
# Counts per class, next to the truth (the synthetic image's own labels):

# %%
names = list(registry.names[1:])  # 'none' (id 0) is not a defect class
counts = pd.DataFrame(
    {
        "detected": defects["class_name"].value_counts().reindex(names, fill_value=0),
        "true": truth["class_name"].value_counts().reindex(names, fill_value=0),
    }
)
counts.index.name = "class"
counts.loc["all"] = counts.sum()
display(counts)

# %% [markdown]
# ### Concentrations
#
# Per class: its share of all defects, its concentration per site of its sublattice (exact
# Clopper–Pearson interval) and its areal density (exact Poisson interval). Exact intervals
# matter here: the interesting classes are rare (a handful of counts, or none).
# A class with no detection still gets an upper bound.
#
# The per-site denominators (`n_sites`) are the columns `predict` found on each sublattice:
# columns are found classically and split into metal and chalcogen by their brightness.
# Section 4 checks that split against the truth (on these images it is currently unreliable,
# which biases `per_site`); the counts, shares and areal densities (per nm²) do not depend
# on it.

# %%
table = result.concentrations(confidence=0.95)
shown = table[["sublattice", "count", "n_sites"]].copy()
for q in ("per_site", "fraction_of_defects"):
    shown[f"{q} (%)"] = [
        f"{100 * v:.3g} [{100 * lo:.3g}, {100 * hi:.3g}]"
        for v, lo, hi in zip(table[q], table[f"{q}_lo"], table[f"{q}_hi"], strict=True)
    ]
shown["per_nm2"] = [
    f"{v:.3g} [{lo:.3g}, {hi:.3g}]"
    for v, lo, hi in zip(table["per_nm2"], table["per_nm2_lo"], table["per_nm2_hi"], strict=True)
]
display(shown)
print(f"field of view {table['area_nm2'].iloc[0]:.1f} nm², 95 % intervals in brackets")
show(analysis.plot_concentrations(table), "02_concentrations")

# %% [markdown]
# ### Density maps
#
# Gaussian kernel density of each class (defects per nm²), edge-corrected so that each map
# integrates to the class's count. Uniform maps mean no large-scale gradient in composition.

# %%
present = [n for n in names if counts.loc[n, "detected"] > 0] or names
maps = analysis.density_maps(defects, result.fields, bandwidth_A=20.0, classes=registry)
show(analysis.plot_density_maps(maps, image_id, classes=present[:8]), "02_density_maps")

# %% [markdown]
# ### Spatial statistics: clustered or random?
#
# The mean nearest-neighbour distance of the defects, and the pair correlation g(r), each
# compared with random placements of the same number of defects on the same lattice sites
# (which accounts for the discrete lattice, the two sublattices and the field edges); z ≪ 0
# and g(r) > 1 at short range mean clustering. We test the most frequent class.
#
# The synthetic specimen places its defects independently, so a significant result here is
# an artefact. The random placements use the site table, so they are only as good as its
# sublattice assignment (checked in section 4, where the test is repeated on the true
# sites): metal columns labelled chalcogen put null pairs at distances no two chalcogen
# sites can have (1.9 Å, 3.8 Å, ...), and g(r) then dips below the band there without any
# real ordering.

# %%
top = counts.loc[names, "detected"].idxmax() if len(defects) else names[0]
n_top = int(counts.loc[top, "detected"])
print(f"most frequent detected class: {top} (n = {n_top})")
nn = None
if n_top >= 2:  # the nearest-neighbour test needs two defects in the image
    nn = analysis.nearest_neighbour_test(defects, sites, class_name=top, n_random=200)
    print(
        f"mean NN distance {nn.observed_mean_A:.2f} Å vs {nn.null_mean_A:.2f} ± "
        f"{nn.null_std_A:.2f} Å for random placement: z = {nn.z:.2f}, p = {nn.p_value:.3g}"
    )
else:
    print("fewer than two detections: no nearest-neighbour test")
pcf = analysis.pair_correlation(defects, sites, class_name=top, r_max_A=30.0, dr_A=1.0)
show(analysis.plot_spatial_statistics(nn, pcf), "02_spatial_statistics")

# %% [markdown]
# ### Class averages
#
# The mean image of the *isolated* defects of each class, registered to sub-pixel precision:
# averaging n crops lowers the noise by √n and shows each defect type's characteristic
# contrast (compare the clean columns of notebook 01). By default a defect counts as isolated
# when no other defect lies within the crop radius; at realistic rates (~10 % of all columns
# defective) that leaves few crops, so we only exclude defects with another one closer than
# 3 Å (the nearest metal–chalcogen neighbours; the randomly placed neighbours further out
# average into a slightly brighter surround). Classes without crops get an empty panel.

# %%
averages = result.class_averages(crop_radius_A=6.0, exclusion_radius_A=3.0)
for name, avg in averages.items():
    print(f"{name:5s} {avg.count:4d} crops")
show(analysis.plot_class_averages(averages, registry), "02_class_averages")

# %% [markdown]
# ## 4. How good were the detections? Compare with the truth
#
# One-to-one Hungarian matching of detections to true defects within 0.8 Å (the evaluation
# protocol of the training runs), class-agnostic; then the matched pairs' classes fill the
# confusion table. Both point sets are converted to Å as (y, x) = (row, col) × pixel size.
#
# - recall of a class: true defects of it found *and* given the right class / its true count;
# - precision: detections of it that are a true defect of that class / its detections.
#
# A single image gives noisy numbers for the rare classes (a few true defects, or none); the
# model's accuracy over many images is in `experiments/wse2te/REPORT.md`.

# %%
MAX_DISTANCE_A = 0.8
pred_yx = defects[["y_A", "x_A"]].to_numpy(np.float64)
true_yx = truth[["y_A", "x_A"]].to_numpy(np.float64)
m = match_detections(pred_yx, true_yx, MAX_DISTANCE_A)  # units of the points: Å
pred_cls = defects["class_name"].to_numpy(object)
true_cls = truth["class_name"].to_numpy(object)
print(
    f"{len(m.pred_index)} of {len(truth)} true defects matched by one of {len(defects)} "
    f"detections within {MAX_DISTANCE_A} Å"
)
if len(m.distance):
    print(f"localisation RMSE {100 * np.sqrt(np.mean(m.distance**2)):.1f} pm")

pair = pd.DataFrame({"true": true_cls[m.gt_index], "predicted": pred_cls[m.pred_index]})
missed = np.setdiff1d(np.arange(len(truth)), m.gt_index)
spurious = np.setdiff1d(np.arange(len(defects)), m.pred_index)
rows = ["spurious", *names]
cols = ["missed", *names]
confusion = pd.DataFrame(0, index=pd.Index(rows, name="true"), columns=cols)
for (t, p), n in pair.value_counts().items():
    confusion.loc[t, p] += n
for t, n in pd.Series(true_cls[missed]).value_counts().items():
    confusion.loc[t, "missed"] += n
for p, n in pd.Series(pred_cls[spurious]).value_counts().items():
    confusion.loc["spurious", p] += n

scores = pd.DataFrame(index=pd.Index(names, name="class"))
scores["true"] = confusion.loc[names].sum(axis=1)
scores["detected"] = confusion[names].sum(axis=0)
scores["correct"] = [confusion.loc[n, n] for n in names]
with np.errstate(invalid="ignore", divide="ignore"):
    scores["recall"] = scores["correct"] / scores["true"].replace(0, np.nan)
    scores["precision"] = scores["correct"] / scores["detected"].replace(0, np.nan)
display(scores.round(3))
print("\nconfusion (rows: truth, 'spurious' = no true defect; columns: predicted, 'missed')")
display(confusion)

# %% [markdown]
# The same numbers from the protocol function used for validation during training,
# `stemjax.evaluation.evaluate` (points in px, (row, col)):

# %%
report = evaluate(
    [{"points": defects[["y_px", "x_px"]].to_numpy(), "classes": defects["class_id"].to_numpy()}],
    [{"points": batch.points[0], "classes": batch.classes[0], "valid": in_region}],
    num_classes=registry.num_classes,
    class_names=list(registry.names),
    pixel_size_angstrom=px,
    max_distance_angstrom=MAX_DISTANCE_A,
)
print(format_report(report))

# %% [markdown]
# The lattice sites behind the per-site concentrations and the spatial null model: `predict`'s
# site table against the true sites (matched within 0.8 Å), per sublattice.

# %%
from scipy.spatial import cKDTree  # noqa: E402

true_sites = pd.DataFrame(
    {
        "image_id": image_id,
        "y_A": batch.points[0][in_region, 0] * px,
        "x_A": batch.points[0][in_region, 1] * px,
        "sublattice": np.asarray(registry.sublattices, dtype=object)[
            batch.sublattice[0][in_region]
        ],
    }
)
# nearest true site of each found site (sites are dense: a KD-tree, not the Hungarian match)
dist, nearest = cKDTree(true_sites[["y_A", "x_A"]].to_numpy()).query(
    sites[["y_A", "x_A"]].to_numpy(), distance_upper_bound=MAX_DISTANCE_A
)
hit = np.isfinite(dist)
true_sub = true_sites["sublattice"].to_numpy()[nearest[hit]]
found_sub = sites["sublattice"].to_numpy()[hit]
agree = float(np.mean(true_sub == found_sub)) if hit.any() else float("nan")
display(pd.crosstab(pd.Series(true_sub, name="true"), pd.Series(found_sub, name="assigned")))
print(
    f"{len(true_sites)} true sites, {len(sites)} found ({int(hit.sum())} on a true site); "
    f"sublattice right for {agree:.0%} of those"
)
print("sites per sublattice, found:", sites["sublattice"].value_counts().to_dict())
print("sites per sublattice, true: ", true_sites["sublattice"].value_counts().to_dict())

# %% [markdown]
# The same detections analysed with the *true* site table: per-site concentrations of the
# detected defects, and the spatial test of section 3. Comparing with section 3 shows how
# much the site table alone moves these numbers.

# %%
table_true_sites = analysis.concentrations(defects, true_sites, registry, result.fields)
true_n_sites = true_sites["sublattice"].value_counts()
true_conc = [counts.loc[c.name, "true"] / true_n_sites[c.sublattice] for c in registry.classes[1:]]
true_conc.append(counts.loc["all", "true"] / len(true_sites))
display(
    pd.DataFrame(
        {
            "per_site (%), predict's sites": 100 * table["per_site"],
            "per_site (%), true sites": 100 * table_true_sites["per_site"],
            "true concentration (%)": 100 * np.array(true_conc),
        },
        index=table.index,
    ).round(3)
)
if n_top >= 2:
    nn_true = analysis.nearest_neighbour_test(defects, true_sites, class_name=top, n_random=200)
    print(
        f"{top}, nearest-neighbour test on the true sites: z = {nn_true.z:.2f}, "
        f"p = {nn_true.p_value:.3g} (on predict's sites: z = {nn.z:.2f}, p = {nn.p_value:.3g})"
    )

# %% [markdown]
# Where were the errors? The centre of the micrograph with the true defects (circles) and
# the detections (crosses), coloured by class:

# %%
colours = {n: plt.get_cmap("tab10")(k % 10) for k, n in enumerate(names)}
fig, ax = plt.subplots(figsize=(7.5, 7))
ax.imshow(
    image,
    cmap="gray",
    extent=extent_A,
    vmin=np.percentile(image, 0.5),
    vmax=np.percentile(image, 99.5),
)
for name in names:
    t = truth[truth["class_name"] == name]
    d = defects[defects["class_name"] == name]
    if len(t):
        ax.scatter(
            t["x_A"],
            t["y_A"],
            s=120,
            facecolors="none",
            edgecolors=[colours[name]],
            lw=1.5,
            label=f"{name} (true)",
        )
    if len(d):
        ax.scatter(
            d["x_A"], d["y_A"], s=50, marker="x", color=[colours[name]], label=f"{name} (detected)"
        )
ax.set_xlim(*zoom)
ax.set_ylim(zoom[1], zoom[0])
ax.set_xticks([])
ax.set_yticks([])
scale_bar(ax, 5.0)
handles, labels = ax.get_legend_handles_labels()
if handles:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
ax.set_title(f"truth (○) vs detections (×), centre {ZOOM_A:g} Å")
fig.tight_layout()
show(fig, "02_truth_vs_detections")
print(f"notebook finished in {time.perf_counter() - T_START:.1f} s")
