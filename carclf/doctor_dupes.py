"""Duplicates, near-duplicates and train/test leaks, from cached features and thumbnails.

Two steps, because neither signal alone separates "the same photo, edited" from "another photo of the
same car": backbone features put a resized/cropped/brightened copy close to its original (cosine
similarity) but also put two studio shots of one model close; so pairs that are close in feature space
are only candidates, and each candidate is verified on the grayscale thumbnails by normalised template
matching of their gradient magnitudes over a small grid of crops and scales (insensitive to brightness,
contrast, recompression and resizing, sensitive to any change of viewpoint; gradients rather than raw
intensities, because the white background of studio shots makes any two of them correlate).
Exact duplicates are pairs whose decoded pixels hash alike.

Calibration (64 px thumbnails, ../shared/data, 247 car photos + 83 edited copies cropped 3-8 % per side,
resized to 50-80 %, brightness +-20 %, JPEG quality 55-80): copies matched their original at 0.78-1.0;
the best match between two distinct photos was 0.71 (two Qashqai ad photos; two studio BMWs at cosine
0.84 matched 0.70), so ``NEAR_DUPLICATE_MATCH`` is 0.75, between the two. The same run found three real
near-duplicate pairs across two of the brand datasets (one a 25 % crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

# Feature-space candidates: a pair is checked on thumbnails only when its cosine similarity reaches this
# (edited copies measured >= 0.70 on ../shared/data; two distinct photos of one studio car reach 0.89, so
# this only prunes, the template match decides) and it is among each photo's CANDIDATES_PER_PHOTO nearest.
CANDIDATE_COSINE = 0.62
CANDIDATES_PER_PHOTO = 5
# The template match a candidate pair needs to count as a near-duplicate: normalised correlation of the
# central part of one thumbnail's gradients slid over the other's (see match_score; calibration above).
NEAR_DUPLICATE_MATCH = 0.75
# The template is the central part of a thumbnail: this share is cut off each side first, so a copy
# cropped by up to this much on any side still lies wholly inside the other photo.
TEMPLATE_MARGIN = 0.12
# Relative sizes (per axis) tried for the template inside the other thumbnail: 1.0 = the template keeps
# its size (no crop), smaller = the other photo shows more around it (the copy was cropped). Every pair is
# tried on the coarse grid; pairs reaching REFINE_FROM there also on the fine one (a 0.05 grid lifted the
# copies' lowest match from 0.72 to 0.78 while distinct photos stayed <= 0.71; 3.4x the work if done for all).
COARSE_SCALES = (1.0, 0.9, 0.8)
FINE_SCALES = (1.0, 0.95, 0.9, 0.85, 0.8)
REFINE_FROM = 0.5
# Rows of the similarity matrix computed at once (bounded memory on 15,000-photo datasets).
BLOCK_ROWS = 1024


@dataclass(frozen=True)
class Pair:
    """Two photos judged to be the same picture: indices into the two sets compared, kind and score."""

    i: int
    j: int
    kind: str  # "duplicate" (same decoded pixels) | "near_duplicate"
    score: float  # 1.0 for duplicates; the template match for near-duplicates
    cosine: float


def candidate_pairs(a: np.ndarray, b: Optional[np.ndarray] = None, min_cosine: float = CANDIDATE_COSINE,
                    per_photo: int = CANDIDATES_PER_PHOTO) -> list[tuple[int, int, float]]:
    """(i, j, cosine) for rows of ``a`` and their nearest rows of ``b`` (``a`` itself when None, i < j).

    Features must be L2-normalised (``carclf.embedding_cache`` gives them so); zero rows never match.
    """
    within = b is None
    b = a if within else b
    if len(a) == 0 or len(b) == 0:
        return []
    found: set[tuple[int, int]] = set()
    pairs = []
    k = min(per_photo + (1 if within else 0), len(b))
    for start in range(0, len(a), BLOCK_ROWS):
        sims = a[start:start + BLOCK_ROWS] @ b.T
        if within:
            rows = np.arange(sims.shape[0])
            sims[rows, rows + start] = -1.0
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, cols in enumerate(nearest):
            i = start + row
            for j in cols:
                cosine = float(sims[row, j])
                if cosine < min_cosine:
                    continue
                key = (min(i, int(j)), max(i, int(j))) if within else (i, int(j))
                if key not in found:
                    found.add(key)
                    pairs.append((key[0], key[1], cosine))
    return pairs


def gradient_image(thumb: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of a grayscale thumbnail (float32): edges, not exposure, are compared."""
    import cv2

    pixels = np.asarray(thumb, dtype=np.float32)
    gx = cv2.Sobel(pixels, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(pixels, cv2.CV_32F, 0, 1, ksize=3)
    return np.sqrt(gx * gx + gy * gy)


def match_score(thumb_a: np.ndarray, thumb_b: np.ndarray) -> float:
    """How well one thumbnail is a crop/rescale/re-exposure of the other: best normalised correlation, -1..1.

    On gradient magnitudes, the central part of each thumbnail (``TEMPLATE_MARGIN`` cut off every side) is
    resized to each pair of scales (``COARSE_SCALES``, then ``FINE_SCALES`` for promising pairs) and slid
    over the other (OpenCV ``TM_CCOEFF_NORMED``); both directions, the best kept.
    """
    grad_a, grad_b = gradient_image(thumb_a), gradient_image(thumb_b)
    best = _best_match(grad_a, grad_b, COARSE_SCALES)
    if best >= REFINE_FROM:
        best = max(best, _best_match(grad_a, grad_b, FINE_SCALES))
    return best


def _best_match(grad_a: np.ndarray, grad_b: np.ndarray, scales: tuple[float, ...]) -> float:
    import cv2

    best = -1.0
    for template_source, target in ((grad_b, grad_a), (grad_a, grad_b)):
        side = template_source.shape[0]
        cut = int(round(side * TEMPLATE_MARGIN))
        template = template_source[cut:side - cut, cut:side - cut]
        for sx in scales:
            for sy in scales:
                size = (max(8, int(round(template.shape[1] * sx))), max(8, int(round(template.shape[0] * sy))))
                scaled = cv2.resize(template, size, interpolation=cv2.INTER_AREA)
                if float(scaled.std()) < 1e-3:  # a flat template (blank photo) correlates with nothing
                    continue
                result = cv2.matchTemplate(target, scaled, cv2.TM_CCOEFF_NORMED)
                best = max(best, float(np.nanmax(result)))
    return best


def find_pairs(features_a: np.ndarray, thumbs_a: np.ndarray, hashes_a: list[str],
               features_b: Optional[np.ndarray] = None, thumbs_b: Optional[np.ndarray] = None,
               hashes_b: Optional[list[str]] = None, threshold: float = NEAR_DUPLICATE_MATCH,
               scores: Optional[dict] = None, keys_a: Optional[list[str]] = None,
               keys_b: Optional[list[str]] = None) -> list[Pair]:
    """Duplicate and near-duplicate pairs within set A (B None) or between A and B (a leak check).

    ``scores`` (a dict, e.g. ``EmbeddingCache.match_scores``) remembers template matches by the two photos'
    ``keys`` (content digests), so a second run verifies only pairs it has not seen. Unreadable photos must
    be left out by the caller (their features are zero rows and never match).
    """
    within = features_b is None
    if within:
        features_b, thumbs_b, hashes_b, keys_b = features_a, thumbs_a, hashes_a, keys_a
    scores = {} if scores is None else scores
    pairs: dict[tuple[int, int], Pair] = {}
    by_hash: dict[str, list[int]] = {}
    for j, digest in enumerate(hashes_b):
        if digest:
            by_hash.setdefault(digest, []).append(j)
    for i, digest in enumerate(hashes_a):
        for j in by_hash.get(digest, []) if digest else []:
            if within and j <= i:
                continue
            pairs[(i, j)] = Pair(i, j, "duplicate", 1.0, float(features_a[i] @ features_b[j]))
    for i, j, cosine in candidate_pairs(features_a, None if within else features_b):
        if (i, j) in pairs:
            continue
        key = "|".join(sorted((keys_a[i], keys_b[j]))) if keys_a is not None and keys_b is not None else None
        score = scores.get(key) if key is not None else None
        if score is None:
            score = float(np.float32(match_score(thumbs_a[i], thumbs_b[j])))  # as the cache stores it
            if key is not None:
                scores[key] = score
        if score >= threshold:
            pairs[(i, j)] = Pair(i, j, "near_duplicate", round(score, 4), round(cosine, 4))
    return sorted(pairs.values(), key=lambda p: (p.i, p.j))


__all__ = ["Pair", "candidate_pairs", "match_score", "find_pairs", "NEAR_DUPLICATE_MATCH", "CANDIDATE_COSINE"]
