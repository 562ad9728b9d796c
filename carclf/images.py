"""The one safe image loader used everywhere: training, prediction, evaluation and the dashboard.

Real photos arrive rotated by EXIF, in CMYK, grayscale, palette, 16-bit or RGBA, as PNGs named .jpg, as
animated GIFs, truncated, empty or absurdly large. Everything that reaches a model goes through
``load_image`` and comes out as an upright 8-bit RGB picture, or as an ``ImageError`` that says why not.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from carclf.errors import ImageError

# Refuse anything larger than this before decoding it: a 50 MP photo is plausible, a 20000x20000 PNG
# "bomb" that would take gigabytes of memory is not.
MAX_PIXELS = 64_000_000
# Refuse strips longer than this many times their width: no photo of a car is one (panoramas stay under 10:1),
# and a 5000x2 "image" breaks what comes next: the augmentation's short-side resize makes it 640,000 px long
# (half a gigabyte, and too long for the JPEG step), and Streamlit's display shrinks its height to 0.
MAX_ASPECT_RATIO = 20

# Transparent pixels are composited onto white, like a browser shows them, instead of dropping alpha
# (dropping it turns transparent regions into whatever colour happened to be stored there, often black).
BACKGROUND_RGB = (255, 255, 255)

# Extensions accepted when scanning folders (decoding is by content, so a PNG named .jpg is fine).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})

# Truncated files must fail loudly, not come back half grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False

ImageSource = Union[str, Path, bytes, bytearray, "io.IOBase", Image.Image, np.ndarray]


def is_image_file(path: Union[str, Path]) -> bool:
    """True when the file name has an image extension (used to pick files out of a folder)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def describe_source(source: ImageSource) -> str:
    """A short name for error messages: the file name, or the kind of object."""
    if isinstance(source, (str, Path)):
        return Path(source).name
    name = getattr(source, "name", None)
    if isinstance(name, str):
        return Path(name).name
    return type(source).__name__


def load_image(
    source: ImageSource, max_pixels: int = MAX_PIXELS, min_size: Union[int, None] = None
) -> Image.Image:
    """Return ``source`` as an upright RGB ``PIL.Image``.

    ``source`` may be a path, raw bytes, a binary file object (a Streamlit upload), a PIL image or an
    HxW / HxWx3 / HxWx4 array. Raises ``ImageError`` with the reason when it cannot be read.
    ``min_size`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (DCT scaling, several times faster) as long
    as both sides stay at least ``min_size`` pixels: the pipelines shrink every photo anyway.
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        return _to_rgb(ImageOps.exif_transpose(source) or source)
    image = _open(source)
    name = describe_source(source)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: image is too large ({width}x{height} = {width * height / 1e6:.0f} MP; "
            f"the limit is {max_pixels / 1e6:.0f} MP). Resize it first."
        )
    _check_shape(name, width, height)
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)  # animated GIF/WebP/PNG: the first frame stands for the file
        if min_size is not None and image.format == "JPEG":
            image.draft(image.mode, (min_size, min_size))
        image.load()
        upright = ImageOps.exif_transpose(image) or image
        return _to_rgb(upright)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name}: the image data is damaged or truncated ({error}).") from error


def load_rgb_array(source: ImageSource, size: Union[int, tuple[int, int], None] = None) -> np.ndarray:
    """Return ``source`` as an HxWx3 uint8 array, resized to ``size`` (square int or (w, h)) if given.

    This is THE evaluation-time preprocessing (validation pipeline, predictor): the whole photo squashed
    to ``size`` with Pillow's antialiased bilinear filter, no crop, so nothing of the car is cut off.
    """
    min_side = None if size is None else (size if isinstance(size, int) else max(size))
    image = load_image(source, min_size=min_side)
    if size is not None:
        target = (size, size) if isinstance(size, int) else tuple(size)
        image = image.resize(target, Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def probe_image(path: Union[str, Path], max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Return ``(width, height)`` from the file header only, or raise ``ImageError``.

    Cheap enough to run on every file of a 15,000-photo dataset while scanning it: it catches empty,
    non-image and oversized files without decoding pixels (truncation is caught later, at decode time).
    """
    path = Path(path)
    with _opening_errors(path.name):
        if path.stat().st_size == 0:
            raise ImageError(f"{path.name}: the file is empty (0 bytes).")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{path.name}: image is too large ({width}x{height}; the limit is {max_pixels / 1e6:.0f} MP)."
        )
    _check_shape(path.name, width, height)
    return width, height


def _check_shape(name: str, width: int, height: int) -> None:
    """Refuse a strip (``MAX_ASPECT_RATIO``) before anything decodes or resizes it."""
    ratio = max(width, height) / max(min(width, height), 1)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"{name}: a {width}x{height} strip, not a photo (sides {ratio:.0f}:1; the limit is "
                         f"{MAX_ASPECT_RATIO}:1). Crop it to the car first.")


@contextlib.contextmanager
def _opening_errors(name: str) -> Iterator[None]:
    """Turn Pillow's ways of failing to open a file into one ``ImageError`` that names the file."""
    try:
        yield
    except ImageError:
        raise
    except UnidentifiedImageError as error:
        raise ImageError(f"{name}: not an image file, or a format Pillow cannot read.") from error
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(f"{name}: image is too large to decode safely ({error}).") from error
    except OSError as error:
        raise ImageError(f"{name}: cannot be read ({error}).") from error


def _open(source: ImageSource) -> Image.Image:
    """Open lazily (header only) from a path, bytes or file object, turning every failure into ImageError."""
    name = describe_source(source)
    with _opening_errors(name):
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise ImageError(f"{path}: no such file.")
            if path.stat().st_size == 0:
                raise ImageError(f"{name}: the file is empty (0 bytes).")
            stream: io.IOBase = io.BytesIO(path.read_bytes())
        elif isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageError("the uploaded file is empty (0 bytes).")
            stream = io.BytesIO(bytes(source))
        elif hasattr(source, "read"):
            if hasattr(source, "seek"):
                source.seek(0)
            data = source.read()
            if not data:
                raise ImageError(f"{name}: the file is empty (0 bytes).")
            stream = io.BytesIO(data)
        else:
            raise ImageError(f"cannot read an image from a {type(source).__name__}.")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(stream)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha composited on white, 16-bit and float scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _array_to_rgb(np.asarray(image))
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def _array_to_rgb(array: np.ndarray) -> Image.Image:
    """Turn an HxW, HxWx1, HxWx3 or HxWx4 array of any numeric dtype into an RGB image."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(f"expected an HxW, HxWx3 or HxWx4 image array, got shape {array.shape}.")
    if array.dtype != np.uint8:
        values = array.astype(np.float64)
        if array.dtype.kind == "f" and values.size and values.max() <= 1.0:
            values = values * 255.0  # floats in 0..1
        elif array.dtype.kind in "ui" and array.dtype.itemsize >= 2:
            values = values * (255.0 / np.iinfo(array.dtype).max if values.max() > 255 else 1.0)
        array = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] == 4:
        return _to_rgb(Image.fromarray(array, mode="RGBA"))
    return Image.fromarray(array, mode="RGB")
