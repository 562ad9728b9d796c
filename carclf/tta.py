"""Deterministic test-time augmentation (TTA) views.

A prediction averaged over a few mildly changed copies of a photo is steadier than one look at it. The
views must be deterministic (the same photo always gives the same answer) and mild (a view must still show
the whole car), so they are fixed flips, crops and brightness changes, not random augmentation. All views
of one photo are stacked into one batch so the model runs once per photo, not once per view.

``score_photos`` is THE TTA scoring: training's final TTA score and the ``Predictor`` (predict, evaluate,
submit) both render each photo's views here, at the classifier's own input size, and average the model's
probabilities here, so ``evaluate --tta N`` on a bundle reproduces the TTA score its run reported.
``tta`` always counts the views averaged: 1 = off (the photo alone); 0 is read as 1 (the old spelling).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image

from carclf.errors import ConfigError, ImageError
from carclf.images import ImageSource, load_image


@dataclass(frozen=True)
class ViewSpec:
    """One TTA view: crop a box (``crop`` of each side, placed at ``anchor``), maybe flip, scale brightness."""

    name: str
    crop: float = 1.0  # fraction of width and height kept (1.0 = whole photo)
    anchor: tuple[float, float] = (0.5, 0.5)  # where the crop box sits: (0, 0) top-left, (1, 1) bottom-right
    flip: bool = False  # mirror left-right (cars are roughly symmetric; text in photos is not important)
    brightness: float = 1.0  # pixel values are multiplied by this and clipped to 0..255


# Every view carclf knows, by name. Crops keep >= 85 % of each side so the car stays in the frame;
# brightness changes stay within +-12 % so colours stay plausible.
VIEWS: dict[str, ViewSpec] = {
    spec.name: spec
    for spec in (
        ViewSpec("original"),
        ViewSpec("flip", flip=True),
        ViewSpec("center_crop", crop=0.88),
        ViewSpec("flip_center_crop", crop=0.88, flip=True),
        ViewSpec("brighter", brightness=1.12),
        ViewSpec("darker", brightness=0.88),
        ViewSpec("left_crop", crop=0.85, anchor=(0.0, 0.5)),
        ViewSpec("right_crop", crop=0.85, anchor=(1.0, 0.5)),
        ViewSpec("top_crop", crop=0.85, anchor=(0.5, 0.0)),
        ViewSpec("bottom_crop", crop=0.85, anchor=(0.5, 1.0)),
        ViewSpec("flip_brighter", flip=True, brightness=1.12),
        ViewSpec("flip_darker", flip=True, brightness=0.88),
    )
}

# The order views are taken in for ``n`` views: the most informative first. "original" is always first
# because ``tta_changed_answer`` compares the average against it.
DEFAULT_ORDER: tuple[str, ...] = tuple(VIEWS)

# The cropped views are cut from one intermediate square of this many times the output size (the smallest
# crop, 0.85, then still has at least the output's resolution), so rendering them costs a small resize
# each instead of a resize of the full photo each (8 views of a 640x480 photo: 52 ms -> about 12 ms).
INTERMEDIATE_SCALE = 1.2

# The ``tta`` that means "no TTA": the photo alone, one view.
OFF = 1

# Views (images) per model call when photos are scored. Measured with the default model on 2 cores: 22.6,
# 21.0, 19.5 and 26.1 ms per image at 1, 8, 16 and 32 per call (bigger batches fall out of the CPU
# caches), and peak RSS 0.9 / 1.1 / 1.5 GB at 16 / 32 / 64 per call. Training's final TTA score batches
# the same way, so both feed the model the same batches.
VIEWS_PER_CALL = 16


def view_count(tta) -> int:
    """The number of views a ``tta`` setting averages: a whole number >= 1 (1 = off); 0 is read as 1."""
    if isinstance(tta, bool) or not isinstance(tta, (int, np.integer)) or tta < 0:
        raise ConfigError(f"tta must be a whole number of views >= 1 (1 = off), got {tta!r}.")
    return max(OFF, int(tta))


def own_tta(meta: dict) -> int:
    """The views a bundle's validation score was measured with (its meta.json "tta"); 1 when absent.

    Every consumer (predict, evaluate, submit, the dashboard) defaults to it, so evaluating a bundle
    reproduces its headline score unless told otherwise.
    """
    try:
        return view_count(meta.get("tta") or OFF)
    except ConfigError:
        return OFF


def resolve_views(n: int, names: tuple[str, ...] | list[str] | None = None) -> tuple[ViewSpec, ...]:
    """The first ``n`` views of ``names`` (default order). ``n`` of 1 (or 0) means the original view only."""
    order = tuple(names) if names else DEFAULT_ORDER
    unknown = [name for name in order if name not in VIEWS]
    if unknown:
        raise ConfigError(f"unknown TTA view(s) {unknown}; choose from: {', '.join(VIEWS)}.")
    if order[0] != "original":
        raise ConfigError("the first TTA view must be 'original' (the answer without TTA is compared to it).")
    n = view_count(n)
    if n > len(order):
        raise ConfigError(f"tta={n} asks for more views than the {len(order)} available; use tta <= {len(order)}.")
    return tuple(VIEWS[name] for name in order[:n])


def render_view(image: Image.Image, spec: ViewSpec, size: int) -> np.ndarray:
    """One view of an RGB image as a ``size`` x ``size`` x 3 uint8 array (the whole photo is squashed to a
    square, as in evaluation: ``carclf.images.load_rgb_array(src, size)``)."""
    width, height = image.size
    box_w, box_h = width * spec.crop, height * spec.crop
    left = (width - box_w) * spec.anchor[0]
    top = (height - box_h) * spec.anchor[1]
    box = None if spec.crop == 1.0 else (left, top, left + box_w, top + box_h)  # Pillow differs with a full box
    view = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
    return adjust(np.asarray(view, dtype=np.uint8), spec)


def adjust(pixels: np.ndarray, spec: ViewSpec) -> np.ndarray:
    """Apply a view's flip and brightness to an already cropped and resized HxWx3 uint8 array."""
    if spec.flip:
        pixels = pixels[:, ::-1]
    if spec.brightness != 1.0:
        pixels = np.clip(pixels.astype(np.float32) * spec.brightness, 0, 255).round().astype(np.uint8)
    return pixels


def tta_views(
    image: ImageSource, n: int, size: int, names: tuple[str, ...] | list[str] | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Return ``(batch, view_names)``: the first ``n`` views of ``image`` as an (n, size, size, 3) uint8 batch.

    ``image`` is anything ``carclf.images.load_image`` reads; view 0 is always the unaltered photo.
    """
    specs = resolve_views(n, names)
    picture = load_image(image, min_size=size)  # the same (draft) decode as load_rgb_array(image, size)
    # Uncropped views are the evaluation view (the whole photo resized, like load_rgb_array) flipped or
    # brightened; cropped views are cut from one intermediate square.
    whole = render_view(picture, VIEWS["original"], size)
    square = None
    views = []
    for spec in specs:
        if spec.crop == 1.0:
            views.append(adjust(whole, spec))
            continue
        if square is None:
            side = int(np.ceil(size * INTERMEDIATE_SCALE))
            square = picture.resize((side, side), Image.Resampling.BILINEAR)
        views.append(render_view(square, spec, size))
    return np.stack(views), tuple(spec.name for spec in specs)


@dataclass(frozen=True)
class ViewBatch:
    """The views of a few photos, for one model call."""

    views: np.ndarray  # (V, size, size, 3) uint8: each photo's views in turn, "original" first
    starts: np.ndarray  # row of each photo's first view in ``views``
    gate_views: Optional[np.ndarray] = None  # (photos, gate_size, gate_size, 3): each photo alone, if asked


# score(batch) -> (probabilities of every view (V, C), one score per photo (e.g. the car gate's) or None)
Scorer = Callable[[ViewBatch], tuple]
# progress(done, total) after each model call
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class PhotoScore:
    """One photo's TTA answer: each view's probabilities, and their mean. ``error`` is set (and nothing else)
    when the photo could not be read."""

    names: tuple[str, ...] = ()  # the views, "original" first
    view_probabilities: Optional[np.ndarray] = None  # (views, classes)
    photo_score: Optional[float] = None  # the scorer's per-photo score (the car gate's), when it gives one
    error: Optional[ImageError] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def probabilities(self) -> np.ndarray:
        """The TTA answer: the mean of the views' probabilities."""
        return self.view_probabilities.astype(np.float64).mean(axis=0)


def score_photos(
    score: Scorer,
    images: Sequence[ImageSource],
    tta: int,
    size: int,
    names: tuple[str, ...] | list[str] | None = None,
    gate_size: Optional[int] = None,
    views_per_call: int = VIEWS_PER_CALL,
    progress: Optional[Progress] = None,
) -> list[PhotoScore]:
    """Score each photo over its first ``tta`` views (``tta_views`` at ``size``, the classifier's own input
    size, the rendering its validation photos had in training), a few photos per ``score`` call.

    With ``gate_size``, each batch also carries every photo alone at that size (the car gate's input).
    An unreadable photo gives a ``PhotoScore`` with ``error`` set instead of stopping the others.
    """
    tta = view_count(tta)
    results: list[Optional[PhotoScore]] = [None] * len(images)
    pending: list[tuple[int, np.ndarray, tuple[str, ...], Optional[np.ndarray]]] = []
    done = reported = 0

    def flush() -> None:
        nonlocal done, reported
        if not pending:
            return
        starts = np.cumsum([0] + [len(views) for _, views, _, _ in pending])
        gate_views = None if gate_size is None else np.stack([gate for _, _, _, gate in pending])
        batch = ViewBatch(np.concatenate([views for _, views, _, _ in pending]), starts[:-1], gate_views)
        probabilities, photo_scores = score(batch)
        probabilities = np.asarray(probabilities)
        for number, (index, _, view_names, _) in enumerate(pending):
            photo_score = None if photo_scores is None else float(photo_scores[number])
            rows = probabilities[starts[number]:starts[number + 1]]
            results[index] = PhotoScore(view_names, rows, photo_score)
        done += len(pending)
        pending.clear()
        if progress:
            progress(done, len(images))
            reported = done

    for index, image in enumerate(images):
        try:
            views, view_names = tta_views(image, tta, size, names)
            gate = None
            if gate_size is not None:  # the photo alone, rendered at the gate's size from its own decode
                gate = views[0] if gate_size == size else tta_views(image, OFF, gate_size)[0][0]
        except ImageError as error:
            results[index] = PhotoScore(error=error)
            done += 1
            continue
        pending.append((index, views, view_names, gate))
        if sum(len(views) for _, views, _, _ in pending) >= views_per_call:
            flush()
    flush()
    if progress and reported < len(images):  # the last photos were unreadable
        progress(len(images), len(images))
    return results  # type: ignore[return-value]
