"""project_2d (PCA / UMAP / trivial cases) and plot_map."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from safesail_training import feature_map as fm
from safesail_training.feature_map import MapResult, plot_map, project_2d

HAS_UMAP = importlib.util.find_spec("umap") is not None


def _two_clusters(n_per: int = 30, d: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated Gaussian blobs in d dims plus their 0/1 labels."""
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d)
    centre *= 6.0 / np.linalg.norm(centre)
    x = np.concatenate([rng.normal(size=(n_per, d)) + centre, rng.normal(size=(n_per, d)) - centre])
    return x, np.repeat([0, 1], n_per)


def _separated(coords: np.ndarray, y: np.ndarray) -> bool:
    """Every point is nearer its own cluster's centroid than the other's, and centroids are far apart."""
    c0, c1 = coords[y == 0].mean(axis=0), coords[y == 1].mean(axis=0)
    d0 = np.linalg.norm(coords - c0, axis=1)
    d1 = np.linalg.norm(coords - c1, axis=1)
    return bool(np.all((d0 < d1) == (y == 0)) and np.linalg.norm(c0 - c1) > 0.8)


@pytest.fixture
def no_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make `import umap` fail, as on a machine without umap-learn."""
    monkeypatch.setitem(sys.modules, "umap", None)


def test_pca_recovers_planted_clusters() -> None:
    x, y = _two_clusters()
    res = project_2d(x, method="pca")
    assert res.method == "pca" and res.coords.shape == (60, 2) and res.coords.dtype == np.float64
    assert _separated(res.coords, y)
    # the clusters differ along the first principal component
    assert np.all(np.sign(res.coords[y == 0, 0]) != np.sign(res.coords[y == 1, 0]))


def test_scaling_keeps_aspect_ratio() -> None:
    rng = np.random.default_rng(1)
    # a flat cloud: x spread ~10x the y spread
    x = np.c_[rng.uniform(-10, 10, 200), rng.uniform(-1, 1, 200), np.zeros(200)]
    c = project_2d(x, method="pca").coords
    assert c.min() >= -1.0 and c.max() <= 1.0
    assert c[:, 0].min() == pytest.approx(-1.0) and c[:, 0].max() == pytest.approx(1.0)
    ratio = np.ptp(c[:, 1]) / np.ptp(c[:, 0])
    assert 0.05 < ratio < 0.15  # not stretched to fill the box
    # scaling is a similarity transform: pairwise-distance ratios are kept
    d_in = np.linalg.norm(x[0] - x[1]) / np.linalg.norm(x[2] - x[3])
    d_out = np.linalg.norm(c[0] - c[1]) / np.linalg.norm(c[2] - c[3])
    assert d_out == pytest.approx(d_in, rel=1e-6)


def test_pca_sign_convention_is_deterministic() -> None:
    x, _ = _two_clusters(seed=3)
    a = project_2d(x, method="pca").coords
    b = project_2d(x.copy(), method="pca").coords
    assert np.array_equal(a, b)
    # independent of row order and of torch vs numpy input
    perm = np.random.default_rng(0).permutation(len(x))
    c = project_2d(x[perm], method="pca").coords
    assert np.allclose(c, a[perm], atol=1e-9)
    t = project_2d(torch.tensor(x, dtype=torch.float64), method="pca").coords
    assert np.allclose(t, a, atol=1e-12)
    # negated data gives the mirrored map: the axes are pinned by the loadings, not by the SVD's sign choice
    assert np.allclose(project_2d(-x, method="pca").coords, -a, atol=1e-9)


def test_small_n_edge_cases() -> None:
    empty = project_2d(np.zeros((0, 8)))
    assert empty.coords.shape == (0, 2) and empty.method == "trivial"
    one = project_2d(np.ones((1, 8)))
    assert one.coords.tolist() == [[0.0, 0.0]] and one.method == "trivial"
    same = project_2d(np.tile(np.arange(8.0), (5, 1)))
    assert same.method == "trivial" and np.array_equal(same.coords, np.zeros((5, 2)))
    two = project_2d(np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]))
    assert two.method == "pca" and np.isfinite(two.coords).all()
    assert sorted(two.coords[:, 0].tolist()) == pytest.approx([-1.0, 1.0]) and np.allclose(two.coords[:, 1], 0.0)
    onecol = project_2d(np.array([[0.0], [2.0], [4.0]]))
    assert onecol.coords.shape == (3, 2) and np.allclose(onecol.coords[:, 1], 0.0)


def test_auto_uses_pca_for_small_n_without_importing_umap(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[bool] = []
    monkeypatch.setattr(fm, "_import_umap", lambda: called.append(True))
    x, _ = _two_clusters(n_per=5)  # 10 points < n_neighbors + 2
    assert project_2d(x).method == "pca" and called == []


def test_auto_falls_back_to_pca_without_umap(no_umap: None) -> None:
    x, y = _two_clusters(n_per=40)
    res = project_2d(x, method="auto")
    assert res.method == "pca" and _separated(res.coords, y)


def test_explicit_umap_without_umap_is_a_clear_error(no_umap: None) -> None:
    with pytest.raises(ImportError, match="umap-learn"):
        project_2d(np.random.default_rng(0).normal(size=(30, 4)), method="umap")


def test_nonfinite_rows_are_named() -> None:
    x = np.zeros((5, 3))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3"):
        project_2d(x)
    x[3, 1] = 0.0
    x[1, 0] = np.inf
    with pytest.raises(ValueError, match="row 1"):
        project_2d(torch.tensor(x), method="pca")


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="2-D"):
        project_2d(np.zeros(5))
    with pytest.raises(ValueError, match="method"):
        project_2d(np.zeros((3, 2)), method="tsne")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_neighbors"):
        project_2d(np.zeros((3, 2)), n_neighbors=1)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_UMAP, reason="umap-learn not installed")
def test_umap_is_deterministic_and_separates_clusters() -> None:
    """Slow: umap's numba kernels compile on first use (~15 s per process)."""
    x, y = _two_clusters(n_per=30)
    a = project_2d(x, method="auto", seed=7)
    b = project_2d(x, method="umap", seed=7)
    assert a.method == b.method == "umap"
    assert np.array_equal(a.coords, b.coords)
    assert a.coords.shape == (60, 2) and a.coords.min() >= -1.0 and a.coords.max() <= 1.0
    assert np.abs(a.coords).max() == pytest.approx(1.0)
    assert _separated(a.coords, y)
    small = project_2d(x[:6], method="umap", n_neighbors=15)  # n_neighbors clamped to n - 1
    assert small.method == "umap" and small.coords.shape == (6, 2) and np.isfinite(small.coords).all()
    with pytest.raises(ValueError, match="at least"):
        project_2d(x[:3], method="umap")


def test_plot_map_writes_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    x, y = _two_clusters(n_per=10)
    coords = project_2d(x, method="pca").coords
    labels = ["harmful" if v else "benign" for v in y]
    notes = [f"p{i}" if i % 5 == 0 else "" for i in range(len(y))]
    out = plot_map(coords, labels, tmp_path / "sub" / "map.png", title="test map", annotate=notes)
    assert out == tmp_path / "sub" / "map.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000
    with pytest.raises(ValueError, match="labels"):
        plot_map(coords, labels[:-1], tmp_path / "bad.png", title="x")


def test_plot_map_without_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    assert plot_map(np.zeros((2, 2)), ["a", "b"], tmp_path / "m.png", title="t") is None
    assert not (tmp_path / "m.png").exists()


def test_map_result_fields() -> None:
    r = MapResult(np.zeros((0, 2)), "trivial")
    assert r.method == "trivial" and r.coords.shape == (0, 2)
