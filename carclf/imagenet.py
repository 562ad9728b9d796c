"""ImageNet-1k class names and the groups of classes carclf cares about (cars, other vehicles, car parts).

The default model and the "is this a car?" gate read 1000 ImageNet probabilities; these groups turn them
into car / not-car evidence and a coarse body type. Ids are indices into ``IMAGENET_CLASSES`` (the Keras /
torchvision order). The groups are a starting point: the gate may retune them after measuring.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from carclf.images import ImageSource, load_image

# The 1000 class names in index order: the first WordNet lemma of each synset ("Egyptian cat").
CLASSES_FILE = Path(__file__).parent / "resources" / "imagenet_classes.json"
IMAGENET_CLASSES: tuple[str, ...] = tuple(json.loads(CLASSES_FILE.read_text(encoding="utf-8")))

# Passenger cars: a photo of any of the ten competition models lands mostly in these.
CAR_CLASS_IDS = frozenset({
    436,  # beach wagon (station wagon, estate car)
    468,  # cab (taxi)
    511,  # convertible
    609,  # jeep
    627,  # limousine
    656,  # minivan
    661,  # Model T
    717,  # pickup
    734,  # police van
    751,  # racer
    817,  # sports car
})

# A coarse, human body-type label for each car class (shown next to the fine-grained prediction).
BODY_TYPES = {
    436: "station wagon",
    468: "taxi",
    511: "convertible",
    609: "off-roader",
    627: "limousine",
    656: "minivan",
    661: "vintage car",
    717: "pickup truck",
    734: "van",
    751: "race car",
    817: "sports car",
}

# Close-ups of car parts: not a whole car, but a car photo often scores here (wheel, mirror, grille).
CAR_PART_IDS = frozenset({
    475,  # car mirror
    479,  # car wheel
    535,  # disk brake
    581,  # grille (radiator grille)
    785,  # seat belt
})

# Vehicles that are not passenger cars: the gate should say "not a car" for these.
VEHICLE_NOT_CAR_IDS = frozenset({
    407,  # ambulance
    408,  # amphibian (amphibious vehicle)
    444,  # bicycle-built-for-two
    547,  # electric locomotive
    555,  # fire engine
    561,  # forklift
    565,  # freight car
    569,  # garbage truck
    573,  # go-kart
    575,  # golfcart
    586,  # half track
    603,  # horse cart
    612,  # jinrikisha
    654,  # minibus
    660,  # mobile home
    665,  # moped
    670,  # motor scooter
    671,  # mountain bike
    675,  # moving van
    690,  # oxcart
    705,  # passenger car (a railway coach, despite the name)
    757,  # recreational vehicle
    779,  # school bus
    802,  # snowmobile
    803,  # snowplow
    820,  # steam locomotive
    829,  # streetcar
    847,  # tank
    864,  # tow truck
    866,  # tractor
    867,  # trailer truck
    870,  # tricycle
    874,  # trolleybus
    880,  # unicycle
})

# ImageNet evaluation protocol: resize the short side to size / 0.875, then take the central square.
# Squashing the whole photo into a square instead costs lite0 15 points of top-1 on the sample photos.
CROP_FRACTION = 0.875


def decode(probabilities: np.ndarray, k: int = 5) -> list[tuple[int, str, float]]:
    """The ``k`` most probable classes of one 1000-way prediction as ``(id, name, probability)``."""
    probabilities = np.asarray(probabilities).reshape(-1)
    if probabilities.size != len(IMAGENET_CLASSES):
        raise ValueError(f"expected {len(IMAGENET_CLASSES)} ImageNet probabilities, got {probabilities.size}")
    top = np.argsort(-probabilities)[:k]
    return [(int(i), IMAGENET_CLASSES[i], float(probabilities[i])) for i in top]


def center_crop(source: ImageSource, size: int, crop_fraction: float = CROP_FRACTION) -> np.ndarray:
    """``source`` as a ``size`` x ``size`` x 3 uint8 array cut the way ImageNet models were evaluated.

    Keeps the aspect ratio (no squashing) and the central ``crop_fraction`` of the short side; this is
    what ImageNet accuracy figures assume, so use it for the ImageNet classifier and the car gate.
    """
    image = load_image(source)
    width, height = image.size
    scale = size / crop_fraction / min(width, height)
    resized = image.resize(
        (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC
    )
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
