"""Deterministic test-time augmentation (TTA) views.

A prediction averaged over a few mildly changed copies of a photo is steadier than one look at it. The
views must be deterministic (the same photo always gives the same answer) and mild (a view must still show
the whole car), so they are fixed flips, crops and brightness changes, not random augmentation. All views
of one photo are stacked into one batch so the model runs once per photo, not once per view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from carclf.errors import ConfigError
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


def resolve_views(n: int, names: tuple[str, ...] | list[str] | None = None) -> tuple[ViewSpec, ...]:
    """The first ``n`` views of ``names`` (default order). ``n`` of 0 or 1 means the original view only."""
    order = tuple(names) if names else DEFAULT_ORDER
    unknown = [name for name in order if name not in VIEWS]
    if unknown:
        raise ConfigError(f"unknown TTA view(s) {unknown}; choose from: {', '.join(VIEWS)}.")
    if order[0] != "original":
        raise ConfigError("the first TTA view must be 'original' (the answer without TTA is compared to it).")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ConfigError(f"tta must be a whole number >= 0, got {n!r}.")
    if n > len(order):
        raise ConfigError(f"tta={n} asks for more views than the {len(order)} available; use tta <= {len(order)}.")
    return tuple(VIEWS[name] for name in order[: max(1, int(n))])


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
