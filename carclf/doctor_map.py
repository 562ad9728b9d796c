"""A 2-D map of a dataset: every photo placed by its backbone features, for a scatter plot.

PCA (the first two principal axes, by subspace iteration), not t-SNE or UMAP, on purpose:
- it is deterministic and stable: re-running the doctor after excluding five photos moves the other
  points only slightly, so a user can find "that cluster" again; t-SNE/UMAP rearrange the whole map
  from run to run and their distances between clusters mean nothing;
- it costs milliseconds for 15,000 photos and needs no new dependency (t-SNE would bring scikit-learn +
  SciPy, UMAP also numba/llvmlite: hundreds of MB on a 2.7 GB Community Cloud box);
- the map is for spotting outliers and mixed-up classes, which the first components of L2-normalised
  features show well (a logo or an interior sits far from the cars; a mislabelled photo sits in the
  other class's cloud). The doctor's findings, not the map, are the measured detection.
"""

from __future__ import annotations

from typing import Optional

import numpy as np


# Subspace iteration: vectors iterated together (more than the 2 wanted, so those 2 converge fast) and rounds.
_BLOCK = 8
_ROUNDS = 40


def top_components(centred: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` principal axes (k, D) of centred rows, by subspace iteration from a fixed start.

    A full SVD of 1,000 x 1,280 features took 4-11 s on 2 busy cores, on every map; iterating a small
    block of vectors takes a tenth of a second and converges to the same axes (up to sign).
    """
    n_rows, n_cols = centred.shape
    block = min(_BLOCK, n_rows, n_cols)
    basis = np.random.default_rng(0).standard_normal((n_cols, block))
    for _ in range(_ROUNDS):
        basis, _ = np.linalg.qr(centred.T @ (centred @ basis))
    projected = centred @ basis  # Rayleigh-Ritz: order the block's axes by explained variance
    values, vectors = np.linalg.eigh(projected.T @ projected)
    order = np.argsort(values)[::-1][:k]
    return (basis @ vectors[:, order]).T


def project_2d(features: np.ndarray, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """(N, 2) coordinates: the first two principal components of ``features`` (rows where ``mask`` is True).

    Rows outside ``mask`` (e.g. unreadable photos, zero features) get NaN. Signs are fixed (largest
    absolute loading positive) so the same data always gives the same picture.
    """
    features = np.asarray(features, dtype=np.float64)
    mask = np.ones(len(features), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    out = np.full((len(features), 2), np.nan)
    rows = features[mask]
    if len(rows) == 0:
        return out
    if len(rows) == 1:
        out[mask] = 0.0
        return out
    centred = rows - rows.mean(axis=0)
    components = top_components(centred, 2)
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    coords = centred @ (components * signs[:, None]).T
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 1))])
    out[mask] = coords
    return out


def map_points(report) -> list[dict]:
    """One dict per photo of a ``DoctorReport``: path, label, x, y, kinds (its findings' kinds, [] = clean).

    Ready for ``plotly.express.scatter(pandas.DataFrame(points), x="x", y="y", color="label")``; the
    path (relative to ``report.root``) opens the photo. Unreadable photos are left out.
    """
    if report.features is None or not report.paths:
        return []
    ok = np.abs(report.features).sum(axis=1) > 0
    coords = project_2d(report.features, ok)
    kinds: dict[str, list[str]] = {}
    for finding in report.findings:
        kinds.setdefault(finding.path, []).append(finding.kind)
    return [
        {"path": path, "label": report.classes[label], "x": float(coords[i, 0]), "y": float(coords[i, 1]),
         "kinds": kinds.get(path, [])}
        for i, (path, label) in enumerate(zip(report.paths, report.labels)) if ok[i]
    ]


__all__ = ["project_2d", "map_points"]
