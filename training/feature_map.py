"""2-D maps of embeddings (UMAP when available, PCA otherwise) and a scatter-plot helper.

`project_2d` turns an [n, d] matrix into [n, 2] coordinates scaled into [-1, 1] with the aspect ratio kept.
UMAP (`umap-learn`) and matplotlib are optional: without UMAP, "auto" falls back to a deterministic PCA,
and without matplotlib `plot_map` returns None.

How it connects: the ``map`` stage of `safesail build-db` (`safesail_training.build_db_describe`) projects the
explanation embeddings with `project_2d` and stores the coordinates in the database; `safesail_training.db_report`
draws them with `plot_map`.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from safesail_neuron_db.fileio import atomic_write_bytes

# UMAP's spectral initialisation needs a handful of points; below this "umap" is refused and "auto" uses PCA.
UMAP_MIN_POINTS = 5
UMAP_INSTALL_HINT = "pip install umap-learn"


@dataclass
class MapResult:
    """2-D coordinates and how they were made.

    `coords` is [n, 2] float64, scaled into [-1, 1] with one factor for both axes (so distances keep their
    aspect ratio; the wider axis spans exactly [-1, 1]). `method` is "umap", "pca" or "trivial" (n <= 1 or
    all points identical: every point at the origin).
    """

    coords: np.ndarray
    method: str


def _as_matrix(emb: np.ndarray | torch.Tensor) -> np.ndarray:
    """Validate `emb` as a finite 2-D matrix and return it as float64 numpy."""
    if isinstance(emb, torch.Tensor):
        x = emb.detach().to("cpu", torch.float64).numpy()
    else:
        x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be a 2-D [n, d] matrix, got shape {tuple(x.shape)}")
    if x.size:
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            rows = np.flatnonzero(bad)
            more = f" (and {len(rows) - 1} more rows)" if len(rows) > 1 else ""
            raise ValueError(f"embeddings row {int(rows[0])} contains NaN or inf{more}")
    return x


def _scale(coords: np.ndarray) -> np.ndarray:
    """Centre the bounding box on the origin and scale both axes by one factor into [-1, 1]."""
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    centred = coords - (lo + hi) / 2.0
    half = float(np.max((hi - lo) / 2.0))
    if not np.isfinite(half) or half <= 0.0:
        return np.zeros_like(coords)
    return np.clip(centred / half, -1.0, 1.0)


def _pca_2d(x: np.ndarray) -> np.ndarray:
    """Project onto the top-2 principal components with a fixed sign convention (deterministic).

    Each component's sign is chosen so that its loading with the largest magnitude is positive (the first
    such loading on ties), which does not depend on the order of the rows. Components with negligible
    variance (relative to the first) are set to zero instead of carrying rounding noise.
    """
    n, d = x.shape
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(2, len(s))
    out = np.zeros((n, 2), dtype=np.float64)
    if k == 0 or s[0] <= 0:
        return out
    for c in range(k):
        if s[c] <= s[0] * 1e-10:
            continue
        v = vt[c]
        if v[int(np.argmax(np.abs(v)))] < 0:
            v = -v
        out[:, c] = centred @ v
    return out


def _import_umap() -> Any | None:
    """The `umap` module, or None when it is not installed or fails to import."""
    try:
        import umap  # type: ignore[import-not-found]
    except Exception:  # ImportError, or numba/llvmlite failures while importing
        return None
    return umap


def _umap_2d(umap_mod: Any, x: np.ndarray, *, seed: int, n_neighbors: int, min_dist: float) -> np.ndarray:
    """Deterministic cosine UMAP to 2-D (random_state fixes the seed and forces a single thread)."""
    n = x.shape[0]
    k = max(2, min(n_neighbors, n - 1))
    reducer = umap_mod.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        metric="cosine",
        random_state=seed,
        n_jobs=1,
        verbose=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spectral-init / disconnected-graph / n_jobs notices
        out = reducer.fit_transform(x)
    return np.asarray(out, dtype=np.float64)


def project_2d(
    emb: np.ndarray | torch.Tensor,
    *,
    method: Literal["auto", "umap", "pca"] = "auto",
    seed: int = 0,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
) -> MapResult:
    """Project an [n, d] embedding matrix to 2-D coordinates in [-1, 1] (aspect ratio kept).

    "auto" uses cosine UMAP (seeded, deterministic) when `umap-learn` imports and n >= n_neighbors + 2, and
    PCA otherwise; "umap" requires umap-learn (ImportError otherwise) and at least `UMAP_MIN_POINTS` points,
    clamping `n_neighbors` to n - 1; "pca" is always available. n == 0 gives an empty [0, 2] result, n == 1
    or all-identical rows give zeros with method "trivial". NaN/inf rows raise ValueError naming the row.
    """
    if method not in ("auto", "umap", "pca"):
        raise ValueError(f"method must be 'auto', 'umap' or 'pca', got {method!r}")
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be >= 2, got {n_neighbors}")
    x = _as_matrix(emb)
    n = x.shape[0]

    umap_mod = None
    if method == "umap":
        umap_mod = _import_umap()
        if umap_mod is None:
            raise ImportError(f"method='umap' needs the optional package umap-learn: {UMAP_INSTALL_HINT}")

    if n == 0:
        return MapResult(np.zeros((0, 2), dtype=np.float64), "trivial")
    spread = float(np.max(np.ptp(x, axis=0))) if x.shape[1] else 0.0
    if n == 1 or spread <= 1e-12 * max(1.0, float(np.max(np.abs(x)))):  # one point, or all rows (nearly) equal
        return MapResult(np.zeros((n, 2), dtype=np.float64), "trivial")

    if method == "umap":
        if n < UMAP_MIN_POINTS:
            raise ValueError(f"method='umap' needs at least {UMAP_MIN_POINTS} points, got {n}; use 'pca' or 'auto'")
        coords, used = _umap_2d(umap_mod, x, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist), "umap"
    elif method == "auto" and n >= max(n_neighbors + 2, UMAP_MIN_POINTS) and (umap_mod := _import_umap()):
        coords, used = _umap_2d(umap_mod, x, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist), "umap"
    else:
        coords, used = _pca_2d(x), "pca"

    if not np.isfinite(coords).all():  # never hand NaN to a plot; a degenerate layout collapses to the origin
        return MapResult(np.zeros((n, 2), dtype=np.float64), "trivial")
    scaled = _scale(coords)
    if not np.any(scaled):
        return MapResult(scaled, "trivial")
    return MapResult(scaled, used)


def plot_map(
    coords: np.ndarray,
    labels: Sequence[str],
    path: Path,
    *,
    title: str,
    annotate: Sequence[str] | None = None,
) -> Path | None:
    """Scatter `coords` [n, 2] coloured by `labels` (with a legend) and save a PNG at `path` (dpi 120).

    `annotate`, if given, holds one text per point written next to it (empty strings are skipped). Uses the
    Agg renderer directly (no pyplot, no global backend change). Returns the path, or None when matplotlib
    is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None

    pts = np.asarray(coords, dtype=np.float64)
    if pts.size == 0:
        pts = np.zeros((0, 2))
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"coords must be [n, 2], got shape {tuple(pts.shape)}")
    labels = [str(lab) for lab in labels]
    if len(labels) != len(pts):
        raise ValueError(f"got {len(pts)} points but {len(labels)} labels")
    if annotate is not None and len(annotate) != len(pts):
        raise ValueError(f"got {len(pts)} points but {len(annotate)} annotations")

    fig = Figure(figsize=(8.0, 7.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    classes = sorted(set(labels))
    palette = _palette(len(classes))
    for i, cls in enumerate(classes):
        idx = [j for j, lab in enumerate(labels) if lab == cls]
        ax.scatter(pts[idx, 0], pts[idx, 1], s=18, alpha=0.8, color=palette[i], label=f"{cls} ({len(idx)})",
                   edgecolors="none")
    if annotate is not None:
        for j, text in enumerate(annotate):
            if text:
                ax.annotate(str(text), (pts[j, 0], pts[j, 1]), fontsize=6, alpha=0.8,
                            xytext=(3, 3), textcoords="offset points")
    ax.set_title(title)
    ax.set_xlim(-1.1, 1.1)
    ax.set_ylim(-1.1, 1.1)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if classes:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False, markerscale=1.5)
    fig.tight_layout()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue(), sync_dir=False)
    return path


def _palette(k: int) -> list[Any]:
    """k distinct colours: tab10 up to 10 classes, tab20 up to 20, then an evenly sampled hsv wheel."""
    from matplotlib import colormaps

    if k <= 10:
        cmap = colormaps["tab10"]
        return [cmap(i) for i in range(k)]
    if k <= 20:
        cmap = colormaps["tab20"]
        return [cmap(i) for i in range(k)]
    cmap = colormaps["hsv"]
    return [cmap(i / k) for i in range(k)]
