"""carclf.images on every real odd-format photo in ../shared/data/edge_cases and on broken files made here."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from carclf.errors import ImageError
from carclf.images import (CONVERT_ROWS, MAX_ASPECT_RATIO, MAX_PIXELS, is_image_file, load_image, load_preview,
                           load_rgb_array, probe_image)

EDGE = "edge_cases"
VARIANTS = "edge_cases/derived_format_variants_of_sf_images"
ORIGINALS = "cars/sf_dl_car_classification_ostrebko"
ODD = "edge_cases/synthetic_or_odd_format"

# Re-encoded competition photo -> the original it was made from (see edge_cases/MANIFEST.md).
VARIANT_SOURCES = {
    "cmyk_class3_3201.jpg": "3/3201.jpg",
    "exif_orientation6_class0_3076.jpg": "0/3076.jpg",
    "grayscale_class4_3258.jpg": "4/3258.jpg",
    "png_class5_3332.png": "5/3332.jpg",
    "rgba_class8_4694.png": "8/4694.jpg",
    "webp_class1_65444.webp": "1/65444.jpg",
}


def _edge_files() -> list[Path]:
    root = Path(__file__).resolve().parents[2] / "shared" / "data" / EDGE
    return sorted(p for p in root.rglob("*") if p.is_file() and is_image_file(p))


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(np.float64)


@pytest.mark.parametrize("path", _edge_files(), ids=lambda p: p.name)
def test_every_edge_case_file_loads_as_rgb(path: Path) -> None:
    image = load_image(path)
    assert image.mode == "RGB"
    assert min(image.size) > 0
    array = load_rgb_array(path, size=48)
    assert array.shape == (48, 48, 3) and array.dtype == np.uint8
    assert probe_image(path) == Image.open(path).size  # header size (before EXIF rotation)


def test_edge_case_folder_is_not_empty() -> None:
    assert len(_edge_files()) >= 30


@pytest.mark.parametrize("variant, source", sorted(VARIANT_SOURCES.items()))
def test_format_variants_match_their_original_photo(shared_data: Path, variant: str, source: str) -> None:
    """CMYK, EXIF-rotated, WebP, PNG and RGBA re-encodings decode to (nearly) the original pixels."""
    loaded = _pixels(load_image(shared_data / VARIANTS / variant))
    original = _pixels(load_image(shared_data / ORIGINALS / source))
    assert loaded.shape == original.shape
    if variant.startswith("grayscale"):
        luminance = original @ np.array([0.299, 0.587, 0.114])
        assert np.allclose(loaded[..., 0], loaded[..., 1]) and np.allclose(loaded[..., 1], loaded[..., 2])
        assert np.abs(loaded[..., 0] - luminance).mean() < 4
    else:
        assert np.abs(loaded - original).mean() < 4  # JPEG/WebP re-encoding noise only


def test_exif_orientation_is_applied(shared_data: Path) -> None:
    path = shared_data / VARIANTS / "exif_orientation6_class0_3076.jpg"
    stored = Image.open(path)
    assert stored.getexif().get(0x0112) == 6
    upright = load_image(path)
    original = load_image(shared_data / ORIGINALS / "0/3076.jpg")
    assert stored.size == (original.height, original.width)  # pixels stored sideways
    assert upright.size == original.size
    wrong_way = _pixels(stored.convert("RGB").rotate(90, expand=True))  # counter-clockwise instead
    assert np.abs(_pixels(upright) - _pixels(original)).mean() < 4
    assert np.abs(wrong_way - _pixels(original)).mean() > 20  # so the comparison can tell them apart
    same_from_pil = load_image(Image.open(path))  # a PIL image with EXIF is rotated too
    assert same_from_pil.size == original.size


def test_cmyk_colours_are_not_inverted(shared_data: Path) -> None:
    loaded = _pixels(load_image(shared_data / VARIANTS / "cmyk_class3_3201.jpg")).mean(axis=(0, 1))
    original = _pixels(load_image(shared_data / ORIGINALS / "3/3201.jpg")).mean(axis=(0, 1))
    assert np.abs(loaded - original).max() < 3


def test_opaque_rgba_keeps_its_colours(shared_data: Path) -> None:
    path = shared_data / ODD / "skimage_logo.png"
    raw = np.asarray(Image.open(path))
    assert raw.shape[2] == 4
    assert np.array_equal(np.asarray(load_image(path)), raw[..., :3])


def test_animated_gif_gives_the_first_frame(shared_data: Path) -> None:
    path = shared_data / ODD / "skimage_no_time_for_that_tiny.gif"
    gif = Image.open(path)
    assert gif.n_frames > 1
    first = np.asarray(gif.convert("RGB"))
    gif.seek(5)
    later = np.asarray(gif.convert("RGB"))
    loaded = np.asarray(load_image(path))
    assert np.array_equal(loaded, first)
    assert not np.array_equal(loaded, later)


# ---- odd files made in tmp_path ---------------------------------------------------------------------


def _photo(shared_data: Path) -> Path:
    return shared_data / ORIGINALS / "5/3332.jpg"


def test_png_named_jpg_decodes_by_content(shared_data: Path, tmp_path: Path) -> None:
    fake = tmp_path / "really_a_png.jpg"
    load_image(_photo(shared_data)).save(fake, format="PNG")
    assert Image.open(fake).format == "PNG"
    assert np.array_equal(np.asarray(load_image(fake)), np.asarray(load_image(_photo(shared_data))))


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    gradient = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (16, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(gradient).save(path)
    assert Image.open(path).mode.startswith("I")
    loaded = np.asarray(load_image(path))[..., 0].astype(int)
    assert loaded.min() == 0 and loaded.max() == 255
    assert len(np.unique(loaded)) > 200  # clipping would leave almost everything at 255
    assert np.all(np.diff(loaded[0]) >= 0)


def test_tall_16_bit_image_is_scaled_the_same_in_every_slice(tmp_path: Path) -> None:
    rows = CONVERT_ROWS * 2 + 37  # converted a slice of rows at a time: every slice, and a short last one
    deep = np.tile(np.linspace(0, 65535, rows).astype(np.uint16)[:, None], (1, 64))
    path = tmp_path / "tall.png"
    Image.fromarray(deep).save(path)
    loaded = np.asarray(load_image(path))[..., 0].astype(int)
    expected = np.clip(np.rint(deep * (255 / 65535)), 0, 255).astype(int)
    assert np.array_equal(loaded, expected)


@pytest.mark.parametrize("pillow_format", ["ICNS", "PCX", "TGA", "PPM", "SGI", "ICO", "EPS"])
def test_formats_that_are_not_photos_are_refused_before_decoding(pillow_format, tmp_path: Path) -> None:
    data = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(data, pillow_format)  # Pillow reads them all back
    path = tmp_path / "photo.jpg"
    path.write_bytes(data.getvalue())
    for source in (path, data.getvalue()):
        with pytest.raises(ImageError, match="not a photo format carclf reads"):
            load_image(source)
    with pytest.raises(ImageError, match="not a photo format"):
        probe_image(path)


def test_preview_is_the_photo_shrunk_to_its_longer_side(shared_data) -> None:
    photo = shared_data / ORIGINALS / "0" / "3076.jpg"
    full = load_image(photo)
    preview = load_preview(photo, 200)
    assert max(preview.size) == 200 and preview.mode == "RGB"
    assert abs(preview.size[0] / preview.size[1] - full.size[0] / full.size[1]) < 0.02
    small = load_preview(photo, 5000)  # never enlarged
    assert small.size == full.size
    with pytest.raises(ImageError, match="not an image"):
        load_preview(b"not a photo", 200)


def test_transparent_pixels_are_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:, :10] = (200, 30, 30, 255)  # opaque red half; the other half is transparent black
    rgba[:5, 10:] = (0, 0, 0, 128)  # half-transparent black
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, mode="RGBA").save(path)
    loaded = np.asarray(load_image(path)).astype(int)
    assert (loaded[:, :10] == (200, 30, 30)).all()
    assert (loaded[10:, 10:] == 255).all()  # dropping alpha would give black here
    assert np.abs(loaded[:5, 10:] - 127).max() <= 1


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette_image = Image.new("P", (8, 8), 0)
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.paste(1, (0, 0, 4, 8))  # left half index 1 (blue), right half index 0 (red, transparent)
    path = tmp_path / "palette.png"
    palette_image.save(path, transparency=0)
    loaded = np.asarray(load_image(path)).astype(int)
    assert (loaded[:, :4] == (0, 0, 255)).all()
    assert (loaded[:, 4:] == 255).all()


def test_truncated_jpeg_raises_image_error(shared_data: Path, tmp_path: Path) -> None:
    data = _photo(shared_data).read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    probe_image(cut)  # the header is intact: scanning keeps it, decoding must refuse it
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(cut)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.jpg", b"", "empty"),
        ("notes.jpg", b"this is a text file, not a photo\n" * 10, "not an image"),
    ],
)
def test_non_images_raise_clear_errors(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageError, match=message) as caught:
        load_image(path)
    assert name in str(caught.value)
    with pytest.raises(ImageError, match=message):
        probe_image(path)
    with pytest.raises(ImageError, match=message):
        load_image(content)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims huge dimensions but holds one tiny compressed row: a decompression bomb."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height", [(100_000, 100_000), (9_000, 8_000)])
def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path, width: int, height: int) -> None:
    assert width * height > MAX_PIXELS
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_header_only(width, height))
    assert path.stat().st_size < 1000
    with pytest.raises(ImageError, match="too large"):
        load_image(path)
    with pytest.raises(ImageError, match="too large"):
        probe_image(path)


@pytest.mark.parametrize("width, height", [(5000, 2), (3, 400)])
def test_a_strip_is_refused_before_decoding(shared_data: Path, tmp_path: Path, width: int, height: int) -> None:
    """A 5000x2 "photo" once broke the augmentation lab (a 640,000 px resize) and the Predict page's display."""
    assert max(width, height) / min(width, height) > MAX_ASPECT_RATIO
    path = tmp_path / "strip.png"
    Image.new("RGB", (width, height), (90, 90, 90)).save(path)
    with pytest.raises(ImageError, match="strip"):
        load_image(path)
    with pytest.raises(ImageError, match="strip"):
        probe_image(path)
    with pytest.raises(ImageError, match="strip"):
        load_rgb_array(io.BytesIO(path.read_bytes()), 64)  # an upload
    # A wide real photo (a panorama-like crop of 8:1) still loads.
    photo = load_image(shared_data / "cars" / "manzhura_ru_5models" / "bmw_x5" / "x1.jpeg")
    wide = tmp_path / "wide.jpg"
    photo.crop((0, 0, photo.width, max(1, photo.width // 8))).save(wide)
    assert load_image(wide).size == (photo.width, max(1, photo.width // 8))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "nope.jpg")


# ---- in-memory inputs -------------------------------------------------------------------------------


def test_bytes_file_object_pil_and_array_inputs_agree(shared_data: Path) -> None:
    path = _photo(shared_data)
    expected = np.asarray(load_image(path))
    data = path.read_bytes()
    stream = io.BytesIO(data)
    stream.read(10)  # a half-read upload is rewound
    for source in (data, bytearray(data), stream, Image.open(path), expected.copy()):
        assert np.array_equal(np.asarray(load_image(source)), expected), type(source).__name__


@pytest.mark.parametrize(
    "array",
    [
        np.full((6, 5), 0.5, np.float32),  # grey floats in 0..1
        np.full((6, 5, 1), 128, np.uint8),
        np.full((6, 5, 3), 32896, np.uint16),  # 16-bit mid grey
        np.dstack([np.full((6, 5, 3), 128, np.uint8), np.full((6, 5), 255, np.uint8)]),
    ],
    ids=["float01", "hw1", "uint16", "rgba"],
)
def test_arrays_of_any_common_layout(array: np.ndarray) -> None:
    loaded = np.asarray(load_image(array)).astype(int)
    assert loaded.shape == (6, 5, 3)
    assert np.abs(loaded - 128).max() <= 1


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((2, 2, 2, 3), np.uint8), 42])
def test_unusable_inputs_raise_image_error(bad) -> None:
    with pytest.raises(ImageError):
        load_image(bad)


def test_min_size_decodes_big_jpegs_smaller_but_not_below(shared_data: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    load_image(_photo(shared_data)).resize((2560, 1440)).save(big, quality=90)
    full = load_image(big)
    reduced = load_image(big, min_size=300)
    assert full.size == (2560, 1440)
    assert reduced.size[0] < full.size[0] and min(reduced.size) >= 300
    assert load_rgb_array(big, size=96).shape == (96, 96, 3)
    # the DCT-scaled decode followed by a resize matches a full decode followed by the same resize
    a = load_rgb_array(big, size=96).astype(float)
    b = np.asarray(full.resize((96, 96), Image.Resampling.BILINEAR)).astype(float)
    assert np.abs(a - b).mean() < 3
