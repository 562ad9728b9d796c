"""TTA views: deterministic, the right count, view 0 unaltered, each view what its name says."""

from __future__ import annotations

import io

import numpy as np
import pytest

from carclf.errors import ConfigError, ImageError
from carclf.images import load_image, load_rgb_array
from carclf.tta import DEFAULT_ORDER, VIEWS, resolve_views, tta_views

SIZE = 64
CAR = "cars/sf_dl_car_classification_ostrebko/3/3201.jpg"


@pytest.fixture(scope="module")
def car_path(shared_data):
    return shared_data / CAR


@pytest.mark.parametrize("n, expected", [(0, 1), (1, 1), (2, 2), (8, 8), (len(VIEWS), len(VIEWS))])
def test_resolve_views_count_and_original_first(n, expected):
    specs = resolve_views(n)
    assert len(specs) == expected
    assert specs[0].name == "original"
    assert len({spec.name for spec in specs}) == expected


@pytest.mark.parametrize(
    "n, names, message",
    [
        (len(VIEWS) + 1, None, "more views"),
        (-1, None, r">= 1 \(1 = off\)"),
        (2.5, None, "whole number"),
        (2, ["original", "sideways"], "unknown TTA view"),
        (2, ["flip", "original"], "must be 'original'"),
    ],
)
def test_resolve_views_rejects_bad_requests(n, names, message):
    with pytest.raises(ConfigError, match=message):
        resolve_views(n, names)


def test_views_of_a_real_photo_are_deterministic_and_distinct(car_path):
    batch, names = tta_views(car_path, 8, SIZE)
    again, _ = tta_views(car_path, 8, SIZE)
    assert batch.shape == (8, SIZE, SIZE, 3) and batch.dtype == np.uint8
    assert names == DEFAULT_ORDER[:8]
    np.testing.assert_array_equal(batch, again)
    flat = batch.reshape(8, -1).astype(np.int32)
    for i in range(8):
        for j in range(i + 1, 8):
            assert np.abs(flat[i] - flat[j]).mean() > 1.0, f"views {names[i]} and {names[j]} are the same"


@pytest.mark.parametrize("n", [1, 8])
def test_view_zero_is_exactly_the_evaluation_input(car_path, n):
    batch, _ = tta_views(car_path, n, SIZE)
    np.testing.assert_array_equal(batch[0], load_rgb_array(car_path, SIZE))


def test_named_views_do_what_they_say(car_path):
    names = ["original", "flip", "brighter", "darker", "left_crop", "right_crop"]
    batch, _ = tta_views(car_path, len(names), SIZE, names=names)
    original = batch[0].astype(np.float32)
    np.testing.assert_array_equal(batch[1], batch[0][:, ::-1])
    assert batch[2].mean() > original.mean() * 1.05
    assert batch[3].mean() < original.mean() * 0.95
    # a left crop and a right crop see different parts of the photo; each still resembles the original
    assert np.abs(batch[4].astype(np.float32) - batch[5]).mean() > 3.0
    for crop in (batch[4], batch[5]):
        assert np.corrcoef(crop.ravel().astype(np.float32), original.ravel())[0, 1] > 0.5


def test_every_kind_of_source_gives_the_same_views(car_path):
    expected, _ = tta_views(car_path, 4, SIZE)
    data = car_path.read_bytes()
    picture = load_image(car_path)
    for source in (data, io.BytesIO(data)):
        batch, _ = tta_views(source, 4, SIZE)
        np.testing.assert_array_equal(batch, expected)
    # an already decoded photo cannot use the JPEG's reduced-size decode: a few levels apart at most
    for source in (picture, np.asarray(picture)):
        batch, _ = tta_views(source, 4, SIZE)
        assert np.abs(batch.astype(np.int32) - expected).mean() < 3.0


def test_exif_rotated_photo_is_rendered_upright(shared_data):
    rotated = shared_data / "edge_cases/derived_format_variants_of_sf_images/exif_orientation6_class0_3076.jpg"
    upright = shared_data / "cars/sf_dl_car_classification_ostrebko/0/3076.jpg"
    a, _ = tta_views(rotated, 1, SIZE)
    b, _ = tta_views(upright, 1, SIZE)
    assert np.abs(a.astype(np.int32) - b).mean() < 8.0


def test_unreadable_photo_raises_image_error(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_text("this is not a photo")
    with pytest.raises(ImageError, match="broken.jpg"):
        tta_views(broken, 4, SIZE)
