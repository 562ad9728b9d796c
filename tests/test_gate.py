"""The car gate: the score is the ImageNet car mass, and on real photos cars pass and non-cars do not."""

from __future__ import annotations

import numpy as np
import pytest

from carclf.gate import CAR_IDS, DEFAULT_THRESHOLD, GATE_META_KEY, CarGate, car_score
from carclf.imagenet import CAR_CLASS_IDS, VEHICLE_NOT_CAR_IDS
from carclf.predict import load_model

CARS = [
    "cars/sf_dl_car_classification_ostrebko/0/3076.jpg",
    "cars/sf_dl_car_classification_ostrebko/5/3332.jpg",
    "cars/alloxxa_whatacar_reference/skoda_octavia",
    "edge_cases/derived_format_variants_of_sf_images/cmyk_class3_3201.jpg",
    "edge_cases/derived_format_variants_of_sf_images/webp_class1_65444.webp",
]
NOT_CARS = [
    "noncars/caffe_cat.jpg",
    "noncars/imagenet_barn.JPEG",
    "edge_cases/other_vehicles_not_car/imagenet_school_bus.JPEG",
    "edge_cases/other_vehicles_not_car/imagenet_golfcart.JPEG",
    "edge_cases/other_vehicles_not_car/skimage_motorcycle_left.png",
    "edge_cases/car_parts_closeup/imagenet_car_wheel.JPEG",
]


def one_hot_mass(ids, total: float) -> np.ndarray:
    probs = np.full(1000, (1 - total) / (1000 - len(ids)))
    probs[list(ids)] = total / len(ids)
    return probs


def test_car_score_is_the_mass_on_car_classes():
    assert car_score(one_hot_mass(CAR_CLASS_IDS, 0.8)) == pytest.approx(0.8)
    assert car_score(one_hot_mass(VEHICLE_NOT_CAR_IDS, 0.9)) < 0.01
    batch = np.stack([one_hot_mass(CAR_CLASS_IDS, 0.3), one_hot_mass(CAR_CLASS_IDS, 0.6)])
    np.testing.assert_allclose(car_score(batch), [0.3, 0.6])
    assert set(CAR_IDS.tolist()) == set(CAR_CLASS_IDS)
    with pytest.raises(ValueError, match="1000"):
        car_score(np.ones(10) / 10)


def test_gate_threshold_comes_from_meta_or_the_default():
    assert CarGate.from_meta(None).threshold == DEFAULT_THRESHOLD
    assert CarGate.from_meta({GATE_META_KEY: None}).threshold == DEFAULT_THRESHOLD
    gate = CarGate.from_meta({GATE_META_KEY: 0.4})
    assert gate.is_car(0.4) and not gate.is_car(0.39)
    with pytest.raises(ValueError, match="0..1"):
        CarGate(1.5)


def _resolve(shared_data, name):
    path = shared_data / name
    return sorted(path.iterdir())[0] if path.is_dir() else path


def test_real_car_photos_pass_and_other_photos_do_not(shared_data):
    model = load_model("default")
    cars = model.predict_batch([_resolve(shared_data, n) for n in CARS], tta=1)
    others = model.predict_batch([_resolve(shared_data, n) for n in NOT_CARS], tta=1)
    assert [r.source for r in cars if not r.is_car] == []
    assert [r.source for r in others if r.is_car] == []
    # not just on the right side of the line: clearly separated
    assert min(r.car_score for r in cars) > 2 * DEFAULT_THRESHOLD
    assert max(r.car_score for r in others) < DEFAULT_THRESHOLD / 2


def test_calibrated_threshold_lets_the_validation_cars_through_within_safe_bounds():
    from carclf.gate import DEFAULT_THRESHOLD, MIN_THRESHOLD, calibrate_threshold

    assert calibrate_threshold([0.9, 0.8, 0.95]) == DEFAULT_THRESHOLD  # confident cars: keep the measured default
    assert calibrate_threshold([]) == DEFAULT_THRESHOLD
    loose = calibrate_threshold([0.08] * 5 + [0.9] * 95)  # unusual car photos: lower, so they pass
    assert MIN_THRESHOLD <= loose < DEFAULT_THRESHOLD and loose <= 0.08
    assert calibrate_threshold([0.001] * 100) == MIN_THRESHOLD  # never so low that non-cars pass
