"""Defect concentrations per class with exact confidence intervals, and their bar chart.

Per class: the count, its share of all defects and its concentration per site of the class's
sublattice (exact Clopper–Pearson binomial intervals), and its areal density in nm⁻² (exact
Poisson / Garwood interval). Exact intervals matter because the interesting classes are rare
(a few counts among 10⁵–10⁶ sites, e.g. 0.08 %), where normal approximations fail.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from scipy import stats

from stemjax.analysis._common import (
    analysed_area_A2,
    check_images,
    class_pairs,
    field_table,
    require_columns,
)

TOTAL = "all"
"""Name of the total row of `concentrations`."""

A2_PER_NM2 = 100.0


def clopper_pearson(k, n, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Clopper–Pearson) two-sided binomial interval for k successes in n trials.

    Lower bound 0 when k = 0, upper bound 1 when k = n; NaN where n = 0. Broadcasts.
    """
    k, n = np.broadcast_arrays(np.asarray(k, float), np.asarray(n, float))
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    bad = (n <= 0) | (k < 0) | (k > n)
    return np.where(bad, np.nan, lo), np.where(bad, np.nan, hi)


def garwood(k, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Exact (Garwood) two-sided interval for the mean of a Poisson count k (lower 0 at k = 0)."""
    k = np.asarray(k, float)
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, stats.chi2.ppf(alpha / 2, 2 * k) / 2, 0.0)
    hi = stats.chi2.ppf(1 - alpha / 2, 2 * k + 2) / 2
    return lo, hi


def concentrations(
    defects: pd.DataFrame,
    sites: pd.DataFrame,
    classes: Any,
    fields: Any,
    *,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """Per-class defect counts and concentrations with exact `confidence` intervals.

    The analysed set is the images of `fields`; every image of `sites` and `defects` must be
    in it, and every image of `fields` must have sites. `classes` (DefectRegistry or ordered
    (name, sublattice) pairs) fixes the rows, so classes without detections still appear
    (count 0, lower bounds 0, upper bounds > 0).

    Returns a DataFrame indexed by class_name (K rows in class order, then the total row 'all')
    with columns:
      sublattice; count; n_sites — number of rows of `sites` on the class's sublattice, over all
      images (for 'all': the sites on any sublattice used by the classes);
      fraction_of_defects (+ _lo, _hi) — count / all defect count, Clopper–Pearson (1 for 'all');
      per_site (+ _lo, _hi) — count / n_sites, Clopper–Pearson (fraction, not %);
      per_nm2 (+ _lo, _hi) — count / analysed area in nm⁻², Garwood; area_nm2 — total analysed
      area (the fields less their `edge_px` band, see `_common.analysed_area_A2`).
    Defects of unknown classes, or whose sublattice disagrees with their class's, raise
    ValueError.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence = {confidence} must be in (0, 1)")
    require_columns(defects, ("image_id", "class_name", "sublattice"), "defects")
    require_columns(sites, ("image_id", "sublattice"), "sites")
    pairs = class_pairs(classes)
    sub_of = dict(pairs)
    f = field_table(fields)
    check_images(defects["image_id"].unique(), f.index, "defects", "fields")
    check_images(sites["image_id"].unique(), f.index, "sites", "fields")
    check_images(f.index, sites["image_id"].unique(), "fields", "sites")

    names = defects["class_name"].astype(str)
    unknown = sorted(set(names) - set(sub_of))
    if unknown:
        raise ValueError(f"defects of unknown classes {unknown}; known: {list(sub_of)}")
    wrong = names.map(sub_of) != defects["sublattice"].astype(str)
    if wrong.any():
        row = defects[wrong].iloc[0]
        raise ValueError(
            f"{int(wrong.sum())} defect(s) on the wrong sublattice, e.g. class "
            f"{row['class_name']!r} (on {sub_of[row['class_name']]!r}) with sublattice "
            f"{row['sublattice']!r}"
        )

    site_counts = sites["sublattice"].astype(str).value_counts()
    counts = names.value_counts()
    area_nm2 = float(analysed_area_A2(f).sum()) / A2_PER_NM2

    index = [n for n, _ in pairs] + [TOTAL]
    sublattice = [s for _, s in pairs] + ["+".join(dict.fromkeys(s for _, s in pairs))]
    count = np.array([int(counts.get(n, 0)) for n, _ in pairs] + [len(defects)], np.int64)
    n_sites = [int(site_counts.get(s, 0)) for _, s in pairs]
    n_sites.append(int(sum(site_counts.get(s, 0) for s in dict.fromkeys(sub_of.values()))))
    n_sites = np.array(n_sites, np.int64)
    total = len(defects)

    table = pd.DataFrame(
        {"sublattice": sublattice, "count": count, "n_sites": n_sites}, index=pd.Index(index)
    )
    table.index.name = "class_name"
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = count / total if total else np.full(len(count), np.nan)
        frac_lo, frac_hi = clopper_pearson(count, total, confidence)
        frac_lo[-1] = frac_hi[-1] = 1.0 if total else np.nan
        per_site = np.where(n_sites > 0, count / np.maximum(n_sites, 1), np.nan)
    site_lo, site_hi = clopper_pearson(count, n_sites, confidence)
    pois_lo, pois_hi = garwood(count, confidence)
    for name, value, lo, hi in (
        ("fraction_of_defects", frac, frac_lo, frac_hi),
        ("per_site", per_site, site_lo, site_hi),
        ("per_nm2", count / area_nm2, pois_lo / area_nm2, pois_hi / area_nm2),
    ):
        table[name], table[f"{name}_lo"], table[f"{name}_hi"] = value, lo, hi
    table["area_nm2"] = area_nm2
    table.attrs["confidence"] = confidence
    return table


_LABELS = {  # quantity: (title, y label, scale)
    "per_site": ("per site of the sublattice", "concentration (% of sites)", 100.0),
    "fraction_of_defects": ("share of all defects", "share of defects (%)", 100.0),
    "per_nm2": ("areal density", "defects per nm² (nm⁻²)", 1.0),
}


def plot_concentrations(
    table: pd.DataFrame,
    *,
    quantities: str | Sequence[str] = ("per_site", "per_nm2"),
    log: bool = True,
    include_total: bool = False,
) -> Figure:
    """Bar chart per class of `concentrations` output, one panel per quantity, with CI bars.

    per_site and fraction_of_defects are shown in %, per_nm2 in nm⁻². With `log` (default, so
    that rare classes such as 0.08 % stay visible) a zero-count class shows only its upper
    bound, as a 'v' marker; bars are coloured by sublattice.
    """
    if isinstance(quantities, str):
        quantities = (quantities,)
    rows = table if include_total else table.drop(index=TOTAL, errors="ignore")
    subs = list(dict.fromkeys(rows["sublattice"]))
    colours = {s: f"C{i}" for i, s in enumerate(subs)}
    conf = table.attrs.get("confidence")
    fig = Figure(figsize=(max(4.0, 0.6 * len(rows) + 1.5) * len(quantities), 3.6))
    axes = fig.subplots(1, len(quantities), squeeze=False)[0]
    x = np.arange(len(rows))
    for ax, q in zip(axes, quantities, strict=True):
        if q not in _LABELS:
            raise ValueError(f"unknown quantity {q!r}; known: {list(_LABELS)}")
        title, label, scale = _LABELS[q]
        v = rows[q].to_numpy(float) * scale
        lo = rows[f"{q}_lo"].to_numpy(float) * scale
        hi = rows[f"{q}_hi"].to_numpy(float) * scale
        ax.bar(x, v, color=[colours[s] for s in rows["sublattice"]], width=0.7)
        ax.errorbar(x, v, yerr=[v - lo, hi - v], fmt="none", ecolor="k", capsize=3, lw=1)
        zero = v <= 0
        if zero.any():
            ax.plot(x[zero], hi[zero], "v", color="k", ms=5, label="upper bound (n = 0)")
        if log:
            ax.set_yscale("log", nonpositive="clip")
        ax.set_xticks(x, list(rows.index), rotation=45, ha="right")
        ax.set_ylabel(label)
        ax.set_title(title + (f" ({conf:.0%} CI)" if conf else ""))
    handles = [Patch(color=colours[s], label=s) for s in subs if "+" not in s]
    axes[0].legend(handles=handles, fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
