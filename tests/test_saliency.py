"""Grad-CAM: heat maps at the photo's size that point at the object, through both model layouts."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from carclf.images import load_image
from carclf.predict import load_model
from carclf.saliency import colorize, grad_cam, overlay_heatmap

SIZE = 64
# Real photos with a hand-measured box around the car (left, top, right, bottom, in the photo's pixels),
# and the least share of the heat map's mass that must fall inside it. The boxes cover 48 % and 35 % of
# the photos; a map spread evenly would put that share inside, one on the car clearly more.
CAR_BOXES = [
    ("cars/sf_dl_car_classification_ostrebko/3/3201.jpg", (5, 38, 585, 265), 0.70),  # side view, gravel below
    ("cars/sf_dl_car_classification_ostrebko/1/65444.jpg", (85, 98, 480, 342), 0.60),  # showroom, other cars
]


def red_detector() -> keras.Model:
    """A contract-shaped classifier with known weights: class 0 = "how red", class 1 = "how not red".

    Its Grad-CAM for class 0 must light up exactly where the picture is red.
    """
    backbone_in = keras.Input((SIZE, SIZE, 3))
    scaled = keras.layers.Rescaling(1 / 255.0)(backbone_in)
    redness = keras.layers.Conv2D(1, 1, activation="relu", name="redness")(scaled)
    backbone = keras.Model(backbone_in, keras.layers.AveragePooling2D(4)(redness), name="backbone")
    head_in = keras.Input(backbone.output.shape[1:])
    logits = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling2D()(head_in))
    head = keras.Model(head_in, logits, name="head")
    image = keras.Input((SIZE, SIZE, 3))
    model = keras.Model(image, keras.layers.Activation("softmax")(head(backbone(image, training=False))))
    backbone.get_layer("redness").set_weights([np.array([1.0, -0.5, -0.5]).reshape(1, 1, 3, 1), np.zeros(1)])
    head.get_layer("logits").set_weights([np.array([[20.0, -20.0]]), np.zeros(2)])
    return model


def test_grad_cam_through_the_backbone_head_split_finds_the_red_square():
    photo = np.full((120, 160, 3), 128, np.uint8)
    photo[30:70, 90:140] = (230, 20, 20)  # a red box on grey, off-centre
    heatmap, overlay = grad_cam(red_detector(), Image.fromarray(photo), class_index=0)
    assert heatmap.shape == (120, 160) and heatmap.dtype == np.float32
    assert 0.0 <= heatmap.min() and heatmap.max() == pytest.approx(1.0, abs=1e-3)
    assert overlay.size == (160, 120) and overlay.mode == "RGB"
    inside = heatmap[30:70, 90:140].sum() / heatmap.sum()
    assert inside > 0.6  # the box is 10 % of the picture
    assert heatmap[:, :60].max() < 0.1  # the left part has no red at all


def test_a_photo_larger_than_the_overlay_cap_is_explained_on_a_smaller_copy_in_one_traced_graph():
    from carclf.saliency import MAX_OVERLAY_SIDE, _traced_cam

    photo = np.full((3000, 4000, 3), 128, np.uint8)  # a 12-megapixel phone photo's size
    photo[750:1750, 2250:3500] = (230, 20, 20)  # the red box of the test above, scaled 25x
    model = red_detector()
    heatmap, overlay = grad_cam(model, Image.fromarray(photo), class_index=0)
    assert heatmap.shape == (MAX_OVERLAY_SIDE * 3 // 4, MAX_OVERLAY_SIDE)  # the aspect ratio is kept
    assert overlay.size == (MAX_OVERLAY_SIDE, MAX_OVERLAY_SIDE * 3 // 4)
    top, bottom, left, right = (round(v * MAX_OVERLAY_SIDE / 4000) for v in (750, 1750, 2250, 3500))
    assert heatmap[top:bottom, left:right].sum() / heatmap.sum() > 0.6
    grad_cam(model, Image.fromarray(photo[:1200, :1600]), class_index=1)  # another size and class
    assert _traced_cam(model).experimental_get_tracing_count() == 1  # one graph per model, not per call


@pytest.mark.parametrize("name, box, least_share", CAR_BOXES)
def test_default_model_heat_map_lies_on_the_car(shared_data, name, box, least_share):
    model = load_model("default")
    photo = load_image(shared_data / name)
    heatmap, overlay = model.explain(photo)
    assert heatmap.shape == (photo.height, photo.width)
    assert overlay.size == photo.size
    left, top, right, bottom = box
    area_share = (right - left) * (bottom - top) / heatmap.size
    inside = heatmap[top:bottom, left:right].sum() / heatmap.sum()
    assert inside >= least_share > area_share
    hot = heatmap >= 0.5
    assert hot[top:bottom, left:right].sum() / hot.sum() > 0.85


def test_overlay_colours_hot_areas_red_and_keeps_cold_areas_close_to_the_photo():
    photo = Image.new("RGB", (40, 20), (128, 128, 128))
    heat = np.zeros((20, 40), np.float32)
    heat[:, 20:] = 1.0
    pixels = np.asarray(overlay_heatmap(photo, heat), dtype=np.int32)
    hot, cold = pixels[10, 30], pixels[10, 5]
    assert hot[0] > hot[2] + 40  # red-ish where hot
    assert np.abs(cold - 128).max() < 40  # mostly the photo where cold
    assert tuple(colorize(np.array([[0.0, 1.0]]))[0, 1]) == (200, 0, 0)


def test_explain_works_on_a_real_carclf_classifier_bundle(shared_data, tmp_path):
    """The classifier that training builds (efficientnet_lite0 backbone + head, random weights, 64 px)."""
    from carclf.bundle import save_bundle
    from carclf.config import load_config
    from carclf.model import build_classifier

    keras.utils.set_random_seed(0)
    config = load_config(preset="quick", overrides={"img_size": SIZE, "weights": "none"})
    bundle = save_bundle(build_classifier(config, 3), tmp_path / "lite", ["a", "b", "c"], meta={"backbone": config.backbone})
    model = load_model(bundle)
    photo = load_image(shared_data / CAR_BOXES[0][0])
    for class_index in (None, 2):
        heatmap, overlay = model.explain(photo, class_index=class_index)
        assert heatmap.shape == (photo.height, photo.width) and overlay.size == photo.size
        assert np.isfinite(heatmap).all() and 0.0 <= heatmap.min() and heatmap.max() <= 1.0
