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

# Rows of a 16-bit or float image scaled to 8 bits at a time (see _to_uint8).
CONVERT_ROWS = 256

# Transparent pixels are composited onto white, like a browser shows them, instead of dropping alpha
# (dropping it turns transparent regions into whatever colour happened to be stored there, often black).
BACKGROUND_RGB = (255, 255, 255)

# The decoders Pillow may use: photo formats only. Pillow knows dozens more (EPS, which runs Ghostscript on
# the file when it is installed; ICNS, PCX, SGI, DDS...), none of them a photo anyone should upload here.
# "JPEG" also opens the MPO files of many phone cameras (a JPEG with extra frames).
PILLOW_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")

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


def load_preview(source: ImageSource, max_side: int) -> Image.Image:
    """``load_image`` shrunk to at most ``max_side`` px on its longer side, for showing and for Grad-CAM.

    The dashboard shows a 50 MP upload at a few hundred pixels: keeping it at full size cost a copy of
    ~200 MB per step (display, overlay), several at once per visitor. JPEGs decode at a reduced scale.
    """
    image = load_image(source, min_size=max_side)
    if max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return image


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
            with Image.open(path, formats=PILLOW_FORMATS) as image:
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
        raise ImageError(f"{name}: not an image file, or not a photo format carclf reads "
                         "(JPEG, PNG, WebP, BMP, GIF, TIFF).") from error
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
            return Image.open(stream, formats=PILLOW_FORMATS)


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha composited on white, 16-bit and float scaled, not clipped."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        # pasted through its own alpha onto white: two full-size copies fewer than alpha_composite and then
        # convert, which took 1.5 GB for a 264 kB 64 MP PNG a visitor can upload
        rgba = image if mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND_RGB)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
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
        array = _to_uint8(array)
    if array.ndim == 2:
        return Image.fromarray(array, mode="L").convert("RGB")
    if array.shape[2] == 4:
        return _to_rgb(Image.fromarray(array, mode="RGBA"))
    return Image.fromarray(array, mode="RGB")


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale 16/32-bit integers (when they use more than 8 bits) and 0..1 floats to 0..255, then round and clip.

    Done in slices of ``CONVERT_ROWS`` rows: a whole 64 MP 16-bit image in float64 took 1.8 GB, beyond a
    public app's 2.7 GB with the model loaded; a slice at a time adds a few MB to the 8-bit result.
    """
    peak = float(array.max()) if array.size else 0.0
    scale = 1.0
    if array.dtype.kind == "f" and peak <= 1.0:
        scale = 255.0  # floats in 0..1
    elif array.dtype.kind in "ui" and array.dtype.itemsize >= 2 and peak > 255:
        scale = 255.0 / np.iinfo(array.dtype).max
    out = np.empty(array.shape, dtype=np.uint8)
    for start in range(0, array.shape[0], CONVERT_ROWS):
        values = array[start : start + CONVERT_ROWS].astype(np.float64) * scale
        out[start : start + CONVERT_ROWS] = np.clip(np.rint(values), 0, 255)
    return out
