"""A tiny, hand-checkable classifier and real-photo folders for the evaluate/submit/export/CLI tests.

The "colour model" has the contract's structure (Input -> "backbone" -> "head" -> softmax) and answers
which of red, green, blue has the largest mean in the photo, so the right answer for a real photo can be
computed independently with numpy. The photos below were chosen because one channel clearly dominates;
``expected_colour`` re-checks that margin so the tests cannot pass by accident.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np

from carclf.bundle import save_bundle
from carclf.images import load_rgb_array

COLOURS = ("red", "green", "blue")  # the colour model's classes, in output order
SIZE = 32  # the colour model's input size
# Logit scale: a 0.1 difference in channel mean (0..1) gives a 2-nat logit gap.
SHARPNESS = 20.0
# A photo is used only when its dominant channel mean beats the next by this much (0..255 levels).
MIN_MARGIN = 8.0

# Real photos (relative to ../shared/data) by their dominant colour.
PHOTOS = {
    "red": [
        "noncars/skimage_coffee.png",
        "cars/vidhyagupta_car_brands_5/ferrari/test_79.jpg",
        "cars/vidhyagupta_car_brands_5/mercedes/train_6.jpg",
    ],
    "green": [
        "noncars/imagenet_ladybug.JPEG",
        "cars/mfismail_car_brands_3/lamborghini/train_31.jpeg",
        "cars/mfismail_car_brands_3/lamborghini/test_29.jpg",
    ],
    "blue": [
        "cars/mfismail_car_brands_3/lamborghini/train_15.jpg",
        "cars/vidhyagupta_car_brands_5/ferrari/train_3.jpg",
        "cars/mfismail_car_brands_3/audi/test_27.jpg",
    ],
}


def colour_classifier(size: int = SIZE) -> keras.Model:
    """Input -> backbone (rescale, 1x1 identity conv) -> head (mean colour, scaled) -> softmax."""
    backbone_in = keras.Input((size, size, 3))
    scaled = keras.layers.Rescaling(1 / 255.0)(backbone_in)
    conv = keras.layers.Conv2D(3, 1, use_bias=False, name="identity_conv")
    backbone = keras.Model(backbone_in, conv(scaled), name="backbone")
    head_in = keras.Input(backbone.output.shape[1:])
    dense = keras.layers.Dense(len(COLOURS), name="colour_logits")
    head = keras.Model(head_in, dense(keras.layers.GlobalAveragePooling2D()(head_in)), name="head")
    image = keras.Input((size, size, 3))
    probs = keras.layers.Activation("softmax", dtype="float32")(head(backbone(image, training=False)))
    model = keras.Model(image, probs, name="colour")
    conv.set_weights([np.eye(3, dtype=np.float32).reshape(1, 1, 3, 3)])
    dense.set_weights([np.eye(3, dtype=np.float32) * SHARPNESS, np.zeros(3, dtype=np.float32)])
    return model


def save_colour_bundle(models_dir: Path, name: str = "colour", class_names=COLOURS) -> Path:
    """A real bundle folder holding the colour model; ``class_names`` renames red, green, blue (e.g. to the
    competition's category ids "0", "1", "2")."""
    return save_bundle(colour_classifier(), Path(models_dir) / name, class_names, meta={"backbone": "colour-test"})


def expected_colour(path: Path, size: int = SIZE) -> str:
    """The colour model's answer computed with numpy; fails if the photo is too close to call."""
    means = load_rgb_array(path, size=size).reshape(-1, 3).astype(np.float64).mean(axis=0)
    top, second = np.sort(means)[::-1][:2]
    assert top - second >= MIN_MARGIN, f"{path.name}: colour margin {top - second:.1f} is too small for a test"
    return COLOURS[int(np.argmax(means))]


def copy_photo(shared_data: Path, relative: str, folder: Path) -> Path:
    """Copy one real photo into ``folder`` (tests write only in tmp_path, never in ../shared)."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(relative).name
    shutil.copyfile(shared_data / relative, target)
    return target


def copy_photos(shared_data: Path, layout: dict, dest: Path) -> Path:
    """Copy real photos into dest/<class>/ (``layout``: class -> paths relative to shared_data)."""
    for name, files in layout.items():
        for relative in files:
            copy_photo(shared_data, relative, dest / name)
    return dest


def truncated_copy(shared_data: Path, relative: str, target: Path) -> Path:
    """A real JPEG cut in half: the header is fine, decoding fails."""
    data = (shared_data / relative).read_bytes()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data[: len(data) // 2])
    return target


def tiny_gate(size: int = 48) -> keras.Model:
    """A stand-in 1000-way ImageNet softmax for the Predictor's car gate (the gate is not under test here)."""
    keras.utils.set_random_seed(1)
    image = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(4, 3, strides=4)(keras.layers.Rescaling(1 / 128.0)(image))
    x = keras.layers.Dense(1000)(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(image, keras.layers.Activation("softmax")(x), name="tiny_gate")


def colour_predictor(bundle_dir: Path):
    """A Predictor over a saved colour bundle (loaded in safe mode) with the tiny stand-in gate."""
    from carclf.bundle import load_bundle
    from carclf.predict import KIND_TRAINED, Predictor

    bundle = load_bundle(bundle_dir)
    return Predictor(bundle_dir.name, KIND_TRAINED, bundle.model, tiny_gate(), bundle.class_names,
                     bundle.display_names, meta=bundle.meta, path=bundle_dir)
