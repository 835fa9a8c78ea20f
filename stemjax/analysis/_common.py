"""Input checking shared by the analysis modules: classes, fields and table columns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

FIELD_COLUMNS = ("height_px", "width_px", "pixel_size_A")
EDGE_COLUMN = "edge_px"
"""Optional field column: width (px) of the border band left out of the analysis (predict drops
defects and sites within `stemjax.predict.EDGE_A` of the edge); 0 or absent = whole field."""


def require_columns(table: pd.DataFrame, columns: Iterable[str], what: str) -> None:
    """ValueError naming `what` and the missing columns if `table` lacks any of `columns`."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{what} table lacks columns {missing}; has {list(table.columns)}")


def class_pairs(classes: Any) -> list[tuple[str, str]]:
    """Ordered (class_name, sublattice) pairs of the K defect classes.

    Accepts a `stemjax.specimen.registry.DefectRegistry` (anything with `.classes` of objects
    with `.name` and `.sublattice`; the 'none' class, sublattice None, is dropped) or an
    iterable of (class_name, sublattice) pairs.
    """
    if hasattr(classes, "classes"):
        pairs = [(c.name, c.sublattice) for c in classes.classes if c.sublattice is not None]
    else:
        pairs = [(str(name), str(sub)) for name, sub in classes]
    names = [n for n, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate class names in {names}")
    return pairs


def class_names(classes: Any) -> list[str]:
    """Class names from a DefectRegistry, (name, sublattice) pairs or plain names."""
    if hasattr(classes, "classes"):
        return [n for n, _ in class_pairs(classes)]
    return [c if isinstance(c, str) else str(c[0]) for c in classes]


def classes_in_table(defects: pd.DataFrame) -> list[str]:
    """Class names present in `defects`, ordered by class_id when available, else by name."""
    if len(defects) == 0:
        return []
    if "class_id" in defects.columns:
        first = defects.groupby("class_name", sort=False)["class_id"].min()
        return list(first.sort_values(kind="stable").index)
    return sorted(defects["class_name"].unique())


def field_table(fields: Any) -> pd.DataFrame:
    """Fields as a DataFrame indexed by image_id with height_px, width_px, pixel_size_A and
    edge_px (0 where not given).

    Accepts a DataFrame (with an `image_id` column, or indexed by image_id) or a mapping
    image_id -> mapping/Series with those keys.
    """
    if isinstance(fields, pd.DataFrame):
        table = fields.set_index("image_id") if "image_id" in fields.columns else fields
    elif isinstance(fields, Mapping):
        table = pd.DataFrame.from_dict(
            {k: {c: v.get(c, 0.0) for c in (*FIELD_COLUMNS, EDGE_COLUMN)}
             for k, v in fields.items()},
            orient="index",
        )  # fmt: skip
    else:
        raise TypeError(f"fields must be a DataFrame or a dict, got {type(fields).__name__}")
    require_columns(table, FIELD_COLUMNS, "fields")
    edge = table[EDGE_COLUMN] if EDGE_COLUMN in table.columns else 0.0
    table = table.loc[:, list(FIELD_COLUMNS)].astype(float)
    table[EDGE_COLUMN] = edge
    table[EDGE_COLUMN] = table[EDGE_COLUMN].astype(float)
    if (table[EDGE_COLUMN] < 0).any():
        raise ValueError("fields: edge_px must be >= 0")
    table.index = table.index.astype(str)
    table.index.name = "image_id"
    if not table.index.is_unique:
        raise ValueError("fields: duplicate image_id")
    if not (table[list(FIELD_COLUMNS)].to_numpy() > 0).all():
        raise ValueError("fields: height_px, width_px and pixel_size_A must be positive")
    return table


def analysed_span_px(size, edge_px):
    """(lo, hi) px of the analysed span along an axis of `size` px: the whole field
    [−½, size − ½], or with an edge band the pixel-centre span [edge, size − 1 − edge] (the
    region `stemjax.predict` keeps). Works elementwise on arrays/Series."""
    lo = np.where(np.asarray(edge_px) > 0, edge_px, -0.5)
    return lo, np.asarray(size) - 1 - lo


def analysed_area_A2(table: pd.DataFrame) -> pd.Series:
    """Area (Å²) of each field's analysed region (a `field_table`, see `analysed_span_px`)."""
    lo_h, hi_h = analysed_span_px(table["height_px"], table[EDGE_COLUMN])
    lo_w, hi_w = analysed_span_px(table["width_px"], table[EDGE_COLUMN])
    h, w = np.maximum(hi_h - lo_h, 0.0), np.maximum(hi_w - lo_w, 0.0)
    return pd.Series(h * w, index=table.index) * table["pixel_size_A"] ** 2


def check_images(ids: Iterable[Any], known: Iterable[Any], what: str, where: str) -> None:
    """ValueError if some image ids of `what` are not among those of `where`."""
    missing = sorted(set(map(str, ids)) - set(map(str, known)))
    if missing:
        shown = missing[:5] + (["..."] if len(missing) > 5 else [])
        raise ValueError(f"{what} has image_id(s) {shown} not in {where}")


def xy_A(table: pd.DataFrame) -> np.ndarray:
    """(N, 2) float64 positions (x_A, y_A) in Å."""
    return table[["x_A", "y_A"]].to_numpy(np.float64)
