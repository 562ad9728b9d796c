"""The Keras EfficientNet-Lite port with the offline ImageNet weights, checked on real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carclf.backbones import build_backbone, build_imagenet_classifier
from carclf.backbones.efficientnet_lite import (
    LITE_VARIANTS,
    block_args,
    build_efficientnet_lite,
    lite_state_dict,
    load_lite_weights,
    round_filters,
)
from carclf.errors import BackboneError
from carclf.imagenet import IMAGENET_CLASSES, center_crop

# Domestic cat classes 281..285: tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat.
CAT_IDS = range(281, 286)
# Published parameter counts of the Lite models (weights + BatchNorm statistics, ImageNet head).
EXPECTED_PARAMS = {"efficientnet_lite0": 4.69e6, "efficientnet_lite1": 5.47e6, "efficientnet_lite2": 6.15e6}
# Thresholds for the 46 ImageNet sample photos; lite0 measured 0.96 top-1, 1.00 top-5 (center crop).
MIN_TOP1 = 0.8
MIN_TOP5 = 0.9


@pytest.fixture(scope="module")
def lite0_classifier():
    return build_imagenet_classifier("efficientnet_lite0")


def _imagenet_photos(shared_data: Path) -> list[tuple[Path, int]]:
    """ImageNet sample photos whose file name carries the class: imagenet_<class> or n<wnid>_<class>."""
    files = sorted(shared_data.glob("noncars/imagenet_*")) + sorted(shared_data.glob("edge_cases/*/imagenet_*"))
    files += sorted(shared_data.glob("cars/imagenet_sample_car_classes/*/n*_*.JPEG"))
    return [(path, IMAGENET_CLASSES.index(path.stem.split("_", 1)[1].replace("_", " "))) for path in files]


@pytest.mark.parametrize("name", list(LITE_VARIANTS))
def test_architecture_matches_weights_file(name):
    model = build_efficientnet_lite(name, include_top=True)
    state = lite_state_dict(name)
    file_params = sum(a.size for key, a in state.items() if not key.endswith("num_batches_tracked"))
    assert model.count_params() == file_params
    assert model.count_params() == pytest.approx(EXPECTED_PARAMS[name], rel=0.005)
    blocks = {key.split(".")[1] for key in state if key.startswith("_blocks.")}
    assert len(block_args(LITE_VARIANTS[name])) == len(blocks)
    load_lite_weights(model, name)  # raises on any missing layer or shape mismatch
    stem = model.get_layer("conv_stem").get_weights()[0]
    np.testing.assert_array_equal(stem, state["_conv_stem.weight"].transpose(2, 3, 1, 0))


def test_round_filters_follows_tensorflow():
    assert [round_filters(c, 1.1) for c in (16, 24, 40, 80, 112, 192, 320)] == [16, 24, 48, 88, 120, 208, 352]
    assert round_filters(32, 1.0) == 32


def test_cat_photo_is_a_cat(lite0_classifier, shared_data):
    image = center_crop(shared_data / "noncars" / "caffe_cat.jpg", 224)
    probabilities = lite0_classifier.predict_on_batch(image[None].astype("float32"))[0]
    assert probabilities.shape == (1000,)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
    top = int(np.argmax(probabilities))
    assert top in CAT_IDS, f"top-1 is {IMAGENET_CLASSES[top]!r}"


def test_imagenet_sample_photos_top1_top5(lite0_classifier, shared_data):
    photos = _imagenet_photos(shared_data)
    assert len(photos) >= 40
    batch = np.stack([center_crop(path, 224) for path, _ in photos]).astype("float32")
    probabilities = lite0_classifier.predict(batch, batch_size=16, verbose=0)
    ranked = np.argsort(-probabilities, axis=1)
    labels = np.array([label for _, label in photos])
    top1 = float(np.mean(ranked[:, 0] == labels))
    top5 = float(np.mean([label in row[:5] for label, row in zip(labels, ranked)]))
    print(f"efficientnet_lite0 on {len(photos)} ImageNet sample photos: top-1 {top1:.3f}, top-5 {top5:.3f}")
    assert top1 >= MIN_TOP1
    assert top5 >= MIN_TOP5


def test_feature_extractor_takes_small_inputs_with_pretrained_weights():
    backbone = build_backbone("efficientnet_lite0", weights="imagenet", input_size=64)
    assert backbone.output_shape == (None, 2, 2, 1280)
    state = lite_state_dict("efficientnet_lite0")
    kernel = backbone.get_layer("blocks_15_project_conv").get_weights()[0]
    np.testing.assert_array_equal(kernel, state["_blocks.15._project_conv.weight"].transpose(2, 3, 1, 0))


def test_features_and_classifier_agree(lite0_classifier, shared_data):
    """Pooling the backbone's feature map through the fc weights gives the classifier's probabilities."""
    backbone = build_backbone("efficientnet_lite0", weights="imagenet")
    image = center_crop(shared_data / "noncars" / "imagenet_zebra.JPEG", 224)[None].astype("float32")
    features = backbone.predict_on_batch(image).mean(axis=(1, 2))
    state = lite_state_dict("efficientnet_lite0")
    logits = features @ state["_fc.weight"].T + state["_fc.bias"]
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(lite0_classifier.predict_on_batch(image), expected, atol=1e-5)


def test_weights_are_parsed_once_per_process():
    lite_state_dict("efficientnet_lite1")
    hits = lite_state_dict.cache_info().hits
    build_backbone("efficientnet_lite1", weights="imagenet", input_size=32)
    assert lite_state_dict.cache_info().hits == hits + 1
    with pytest.raises(ValueError):
        lite_state_dict("efficientnet_lite1")["_fc.bias"][0] = 0.0  # the cached arrays are read-only


def test_unknown_variant_and_too_small_input():
    with pytest.raises(BackboneError, match="efficientnet_lite0"):
        build_efficientnet_lite("efficientnet_lite9")
    with pytest.raises(BackboneError, match="at least 32"):
        build_efficientnet_lite("efficientnet_lite0", input_size=16)
