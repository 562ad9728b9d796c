"""ImageNet class names, the class groups carclf uses, and the evaluation crop."""

from __future__ import annotations

import numpy as np
import pytest

from carclf.imagenet import (
    BODY_TYPES,
    CAR_CLASS_IDS,
    CAR_PART_IDS,
    IMAGENET_CLASSES,
    VEHICLE_NOT_CAR_IDS,
    center_crop,
    decode,
)
from carclf.images import load_image


def test_class_names_in_index_order():
    assert len(IMAGENET_CLASSES) == 1000
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[999] == "toilet tissue"
    assert IMAGENET_CLASSES[285] == "Egyptian cat"
    # Only two names repeat in ImageNet-1k: crane (bird, machine) and maillot (two swimsuit synsets).
    repeated = {name for name in IMAGENET_CLASSES if IMAGENET_CLASSES.count(name) > 1}
    assert repeated == {"crane", "maillot"}


@pytest.mark.parametrize(
    "index, name",
    [(436, "beach wagon"), (468, "cab"), (475, "car mirror"), (479, "car wheel"), (511, "convertible"),
     (581, "grille"), (609, "jeep"), (627, "limousine"), (656, "minivan"), (661, "Model T"), (717, "pickup"),
     (734, "police van"), (751, "racer"), (817, "sports car"), (705, "passenger car"), (864, "tow truck")],
)
def test_group_ids_name_the_right_classes(index, name):
    assert IMAGENET_CLASSES[index] == name


def test_groups_are_disjoint_and_body_types_cover_cars():
    assert not CAR_CLASS_IDS & CAR_PART_IDS
    assert not CAR_CLASS_IDS & VEHICLE_NOT_CAR_IDS
    assert not CAR_PART_IDS & VEHICLE_NOT_CAR_IDS
    assert set(BODY_TYPES) == set(CAR_CLASS_IDS)
    assert all(0 <= i < 1000 for i in CAR_CLASS_IDS | CAR_PART_IDS | VEHICLE_NOT_CAR_IDS)


def test_decode_orders_by_probability():
    probabilities = np.zeros(1000, dtype="float32")
    probabilities[[817, 436, 3]] = [0.5, 0.3, 0.2]
    assert decode(probabilities, k=2) == [(817, "sports car", 0.5), (436, "beach wagon", pytest.approx(0.3))]
    with pytest.raises(ValueError, match="1000"):
        decode(np.ones(10))


def test_center_crop_keeps_aspect_and_centre(shared_data):
    path = shared_data / "noncars" / "caffe_cat.jpg"  # 480x360 landscape
    crop = center_crop(path, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    # The crop is the middle 87.5 % of the short side: compare with a manual crop of the original.
    original = np.asarray(load_image(path), dtype="float32")
    side = round(360 * 0.875)
    top, left = (360 - side) // 2, (480 - side) // 2
    manual = original[top : top + side, left : left + side]
    assert abs(crop.mean() - manual.mean()) < 3.0
    assert abs(crop.mean() - original.mean()) > abs(crop.mean() - manual.mean())
