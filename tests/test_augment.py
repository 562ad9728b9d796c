"""carclf.augment / augment_registry: registry derived from albumentations, strict validation, strength,
reproducible Compose on real photos, presets and named configs."""

from __future__ import annotations

import inspect
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import albumentations as A
import numpy as np
import pytest

from carclf.augment import (
    AugConfig,
    Augmenter,
    AugSchedule,
    TransformEntry,
    build_compose,
    list_named,
    list_presets,
    load_aug_config,
    load_named,
    pre_resize_side,
    save_aug_config,
    save_named,
    scale_entry,
    to_albumentations,
    validate,
)
from carclf.augment_registry import KINDS, TRANSFORMS
from carclf.errors import ConfigError
from carclf.images import load_rgb_array

PHOTO = "cars/sf_dl_car_classification_ostrebko/8/4694.jpg"
SIZE = 64  # small: tests run on 2 shared cores


@pytest.fixture(scope="module")
def photo(shared_data: Path) -> np.ndarray:
    return load_rgb_array(shared_data / PHOTO)


# ---- the pytest filter and the registry ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [lambda: A.GaussNoise(var_limit=(10, 50)), lambda: A.CoarseDropout(max_holes=4), lambda: A.Affine(cval=3),
     lambda: A.ImageCompression(quality_lower=50), lambda: A.ShiftScaleRotate()],
    ids=["var_limit", "max_holes", "cval", "quality_lower", "ShiftScaleRotate"],
)
def test_pytest_makes_albumentations_warnings_fatal(make) -> None:
    """pyproject's filterwarnings must turn these (ignored-argument) warnings into test failures."""
    with pytest.raises(UserWarning):
        make()


def test_registry_covers_the_curated_transforms() -> None:
    expected = {"HorizontalFlip", "Affine", "RandomResizedCrop", "RandomBrightnessContrast", "HueSaturationValue",
                "ColorJitter", "GaussNoise", "MotionBlur", "GaussianBlur", "CLAHE", "CoarseDropout", "ToGray",
                "RandomShadow", "RandomFog", "RandomRain", "ImageCompression", "Perspective", "RandomGamma",
                "Sharpen"}
    assert expected <= set(TRANSFORMS)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_registry_matches_the_installed_library(name: str) -> None:
    spec = TRANSFORMS[name]
    cls = getattr(A, name)
    signature = inspect.signature(cls.__init__)
    assert spec.cls is cls
    assert spec.default_p == signature.parameters["p"].default
    assert spec.accepted == {p.name for p in spec.params}
    assert spec.accepted <= set(cls.InitSchema.model_fields)
    for param in spec.params:
        assert param.kind in KINDS
        default = signature.parameters[param.name].default
        assert param.default == (None if default is inspect.Parameter.empty else default)
        if param.kind == "choice":
            assert param.default in param.choices or (param.optional and param.default is None)
        if param.kind in ("float", "int", "range") and param.default is not None:
            assert param.ui_low < param.ui_high, param.name
            values = param.default if isinstance(param.default, tuple) else (param.default,)
            for value in values:
                assert param.low is None or value >= param.low, param.name
                assert param.high is None or value <= param.high, param.name
    assert not spec.image_sized or set(spec.image_sized).isdisjoint(spec.accepted)


def test_registry_reads_bounds_and_types_from_the_schema() -> None:
    std = TRANSFORMS["GaussNoise"].param("std_range")
    assert (std.kind, std.low, std.high, std.default) == ("range", 0, 1, (0.2, 0.44))
    quality = TRANSFORMS["ImageCompression"].param("quality_range")
    assert (quality.low, quality.high, quality.integer) == (1, 100, True)
    assert TRANSFORMS["ImageCompression"].param("compression_type").choices == ("jpeg", "webp")
    assert TRANSFORMS["GaussNoise"].param("per_channel").kind == "bool"
    factor = TRANSFORMS["GaussNoise"].param("noise_scale_factor")
    assert (factor.low, factor.low_inclusive, factor.high) == (0, False, 1)
    assert "size" not in TRANSFORMS["RandomResizedCrop"].accepted
    assert "num_output_channels" not in TRANSFORMS["ToGray"].accepted  # models need 3 channels
    assert "noise standard deviation" in std.help
    assert TRANSFORMS["Affine"].param("rotate").help.startswith("Rotation in degrees (**NOT** radians), i.e. ")
    assert TRANSFORMS["MotionBlur"].param("blur_limit").odd


def _extreme_values(param):
    if param.kind == "range":
        low, high = param.ui_low, param.ui_high
        if param.odd:  # a slider stepping by 2 from an odd low end
            high = low + (high - low) // 2 * 2
        pairs = [(low, high), (low, low), (high, high)]
        return [tuple(int(v) for v in pair) if param.integer else pair for pair in pairs]
    if param.kind in ("float", "int"):
        return [int(v) if param.integer else v for v in (param.ui_low, param.ui_high)]
    if param.kind == "choice":
        return list(param.choices)
    if param.kind == "bool":
        return [True, False]
    return []


@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. a zero sigma dividing by zero in a kernel
@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_slider_end_and_choice_is_a_valid_config(name: str, photo: np.ndarray) -> None:
    """A dashboard built from the registry can never produce a config the library rejects."""
    for param in TRANSFORMS[name].params:
        for value in _extreme_values(param):
            config = validate(AugConfig((TransformEntry(name, 1.0, {param.name: value}),)))
            out = build_compose(config, SIZE, seed=0)(image=photo)["image"]
            assert out.shape == (SIZE, SIZE, 3), (param.name, value)


# ---- validation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"name": "Blur2000"}, "unknown augmentation transform 'Blur2000'"),
        ({"name": "Cutout"}, "use CoarseDropout"),
        ({"name": "JpegCompression"}, "use ImageCompression"),
        ({"name": "GaussNoise", "params": {"var_limit": [10, 50]}}, "var_limit -> std_range"),
        ({"name": "CoarseDropout", "params": {"max_holes": 8}}, "max_holes -> num_holes_range"),
        ({"name": "ImageCompression", "params": {"quality_lower": 50}}, "quality_lower -> quality_range"),
        ({"name": "HorizontalFlip", "params": {"always_apply": True}}, "always_apply -> p=1.0"),
        ({"name": "Affine", "params": {"cval": 0}}, "cval -> fill"),
        ({"name": "Affine", "params": {"rotation": 10}}, "unknown argument\\(s\\) rotation"),
        ({"name": "RandomResizedCrop", "params": {"size": [10, 10]}}, "set from the image size"),
        ({"name": "GaussNoise", "params": {"std_range": [0.1, 2.0]}}, "out of range"),
        ({"name": "GaussNoise", "params": {"noise_scale_factor": 0}}, "out of range"),
        ({"name": "GaussianBlur", "params": {"sigma_limit": [3.0, 1.0]}}, "must not exceed"),
        ({"name": "ImageCompression", "params": {"quality_range": [0, 100]}}, "out of range"),
        ({"name": "MotionBlur", "params": {"blur_limit": [4, 8]}}, "must be odd"),
        ({"name": "ImageCompression", "params": {"quality_range": [95, 99.5]}}, "ImageCompression: invalid"),
        ({"name": "Affine", "params": {"rotate": "a lot"}}, "Affine: invalid arguments"),
        ({"name": "ToGray", "params": {"method": "magic"}}, "ToGray: invalid arguments"),
        ({"name": "HorizontalFlip", "p": 1.5}, "p must be between 0 and 1"),
        ({"name": "HorizontalFlip", "p": "often"}, "must be a number"),
        ({"name": "HorizontalFlip", "prob": 0.5}, "unknown key\\(s\\) \\['prob'\\]"),
        ({"name": "HorizontalFlip", "params": [1]}, "'params' must be a mapping"),
        ({"p": 0.5}, "must be a mapping with a 'name'"),
    ],
)
def test_bad_entries_raise_config_error(entry: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AugConfig.from_dict({"transforms": [entry]})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"strength": 3}, "strength must be between 0.0 and 2.0"),
        ({"strength": -0.1}, "strength must be between"),
        ({"transforms": {"HorizontalFlip": {}}}, "must be a list"),
        ({"augmentations": []}, "unknown key\\(s\\) \\['augmentations'\\]"),
        (["HorizontalFlip"], "must be a mapping"),
    ],
)
def test_bad_configs_raise_config_error(data, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AugConfig.from_dict(data)


# ---- files, presets, named configs ---------------------------------------------------------------------


def test_builtin_presets_exist_and_load() -> None:
    presets = list_presets()
    assert {"default", "light", "none"} <= set(presets)
    assert load_aug_config("none").transforms == ()
    assert load_aug_config(None) == load_aug_config("default")
    assert len(load_aug_config("light").transforms) < len(load_aug_config("default").transforms)


@pytest.mark.parametrize("preset", sorted(list_presets()))
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_configs_round_trip_exactly(preset: str, suffix: str, tmp_path: Path) -> None:
    config = load_aug_config(preset)
    path = save_aug_config(config, tmp_path / f"saved{suffix}")
    loaded = load_aug_config(path)
    assert loaded == config
    again = save_aug_config(loaded, tmp_path / f"again{suffix}")
    assert again.read_text() == path.read_text()


def test_round_trip_keeps_types(tmp_path: Path) -> None:
    config = AugConfig(
        (TransformEntry("Affine", 0.3, {"rotate": (-7, 7), "scale": 1.05, "border_mode": 1, "keep_ratio": True}),
         TransformEntry("ImageCompression", 0.25, {"quality_range": [60, 95], "compression_type": "webp"})),
        strength=0.75,
    )
    for suffix in (".yaml", ".json"):
        loaded = load_aug_config(save_aug_config(config, tmp_path / f"c{suffix}"))
        assert loaded == config
        assert loaded.transforms[0].params["rotate"] == (-7, 7)
        assert isinstance(loaded.transforms[0].params["keep_ratio"], bool)
        assert loaded.transforms[1].params["quality_range"] == (60, 95)


def test_to_albumentations_is_albumentations_own_format(photo: np.ndarray) -> None:
    config = load_aug_config("default")
    data = to_albumentations(config, SIZE)
    rebuilt = A.from_dict(json.loads(json.dumps(data)))
    names = [t.__class__.__name__ for t in rebuilt.transforms]
    assert names == ["SmallestMaxSize"] + [e.name for e in config.transforms] + ["Resize"]
    assert json.loads(json.dumps(A.to_dict(rebuilt))) == json.loads(json.dumps(data))


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown augmentation preset 'heavy'"):
        load_aug_config("heavy")
    with pytest.raises(ConfigError, match="not found"):
        load_aug_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("transforms: [name: {")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_aug_config(broken)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"transforms": [{"name": "GaussNoise", "params": {"var_limit": 5}}]}))
    with pytest.raises(ConfigError, match="bad.json: GaussNoise: unknown argument"):
        load_aug_config(bad)
    with pytest.raises(ConfigError, match=".yaml, .yml or .json"):
        save_aug_config(load_aug_config("light"), tmp_path / "x.txt")


def test_named_configs(tmp_path: Path) -> None:
    config = AugConfig((TransformEntry("HorizontalFlip", 0.5),), strength=0.5)
    path = save_named(config, "My fav config!", tmp_path)
    assert path == tmp_path / "My-fav-config.yaml"
    sneaky = save_named(config, "../../etc/passwd", tmp_path)
    assert sneaky.parent == tmp_path
    named = list_named(tmp_path)
    assert list(named)[: len(list_presets())] == list(list_presets())
    assert named["My-fav-config"] == path
    assert load_named("My-fav-config", tmp_path) == config
    assert load_named("light", tmp_path) == load_aug_config("light")
    with pytest.raises(ConfigError, match="built-in preset"):
        save_named(config, "default", tmp_path)
    with pytest.raises(ConfigError, match="not a usable config name"):
        save_named(config, "  ??? ", tmp_path)
    with pytest.raises(ConfigError, match="no augmentation config named"):
        load_named("nope", tmp_path)
    assert set(list_named(tmp_path / "missing")) == set(list_presets())


# ---- building and strength ------------------------------------------------------------------------------


def _run(compose: A.Compose, image: np.ndarray, n: int) -> list[np.ndarray]:
    return [compose(image=image)["image"] for _ in range(n)]


def test_compose_shape_and_pre_resize(photo: np.ndarray) -> None:
    compose = build_compose(load_aug_config("default"), SIZE, seed=1)
    assert isinstance(compose.transforms[0], A.SmallestMaxSize)
    assert compose.transforms[0].max_size == pre_resize_side(SIZE)
    assert isinstance(compose.transforms[-1], A.Resize)
    tall = np.ascontiguousarray(photo[:, :200])
    for image in (photo, tall, photo[:40, :30]):
        out = compose(image=image)["image"]
        assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8


def test_seed_makes_draws_reproducible(photo: np.ndarray) -> None:
    config = load_aug_config("strong")
    first = _run(build_compose(config, SIZE, seed=5), photo, 6)
    second = _run(build_compose(config, SIZE, seed=5), photo, 6)
    other = _run(build_compose(config, SIZE, seed=6), photo, 6)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))
    assert len({a.tobytes() for a in first}) > 1  # draws differ from image to image


def test_eval_compose_and_strength_zero_are_plain_resizes(photo: np.ndarray, shared_data: Path) -> None:
    config = load_aug_config("strong")
    plain = build_compose(None, SIZE)(image=photo)["image"]
    assert np.array_equal(build_compose(config, SIZE, train=False)(image=photo)["image"], plain)
    for out in _run(build_compose(config, SIZE, seed=3, strength=0.0), photo, 4):
        assert np.array_equal(out, plain)
    evaluation = load_rgb_array(shared_data / PHOTO, SIZE)  # what validation and prediction feed the model
    assert np.abs(evaluation.astype(int) - plain.astype(int)).mean() < 4  # only filter rounding differs


def test_strength_scales_probability_and_magnitude() -> None:
    entry = TransformEntry("Affine", 0.4, {"rotate": (-10, 10), "scale": (0.9, 1.1), "border_mode": 1})
    half = scale_entry(entry, 0.5)
    assert half.p == pytest.approx(0.2)
    assert half.params["rotate"] == (-5, 5) and half.params["scale"] == pytest.approx((0.95, 1.05))
    assert half.params["border_mode"] == 1  # not a magnitude
    double = scale_entry(entry, 2.0)
    assert double.p == pytest.approx(0.8) and double.params["rotate"] == (-20, 20)
    assert scale_entry(TransformEntry("HorizontalFlip", 0.7), 2.0).p == 1.0
    assert scale_entry(entry, 1.0) is entry
    quality = scale_entry(TransformEntry("ImageCompression", 0.5, {"quality_range": (50, 100)}), 2.0)
    assert quality.params["quality_range"] == (1, 100)  # clipped to the schema's bounds, still ints
    gamma = scale_entry(TransformEntry("RandomGamma", 0.5), 0.5)  # unset parameter: scaled from its default
    assert gamma.params["gamma_limit"] == pytest.approx((90, 110))


@pytest.mark.parametrize("preset", sorted(list_presets()))
@pytest.mark.parametrize("strength", [0.0, 0.3, 1.0, 2.0])
def test_every_preset_builds_at_every_strength(preset: str, strength: float, photo: np.ndarray) -> None:
    compose = build_compose(load_aug_config(preset), SIZE, seed=0, strength=strength)
    assert compose(image=photo)["image"].shape == (SIZE, SIZE, 3)


def test_stronger_means_further_from_the_photo(photo: np.ndarray) -> None:
    config = load_aug_config("default")
    plain = build_compose(None, SIZE)(image=photo)["image"].astype(float)

    def change(strength: float) -> float:
        outs = _run(build_compose(config, SIZE, seed=11, strength=strength), photo, 24)
        return float(np.mean([np.abs(o.astype(float) - plain).mean() for o in outs]))

    weak, normal, strong = change(0.25), change(1.0), change(2.0)
    assert 0 < weak < normal < strong


# ---- runtime: Augmenter and schedule --------------------------------------------------------------------


def test_augmenter_is_reproducible_per_seed_across_threads(photo: np.ndarray) -> None:
    augmenter = Augmenter(load_aug_config("default"), SIZE)
    seeds = list(range(16))
    sequential = [augmenter(photo, s) for s in seeds]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda s: augmenter(photo, s), reversed(seeds)))[::-1]
    assert all(np.array_equal(a, b) for a, b in zip(sequential, parallel))
    assert len({a.tobytes() for a in sequential}) > 8


def test_augmenter_strength_changes_without_rebuilding(photo: np.ndarray) -> None:
    augmenter = Augmenter(load_aug_config("default"), SIZE)
    plain = build_compose(None, SIZE)(image=photo)["image"]
    assert not all(np.array_equal(augmenter(photo, s), plain) for s in range(8))
    augmenter.set_strength(0.0)
    assert all(np.array_equal(augmenter(photo, s), plain) for s in range(8))
    with pytest.raises(ConfigError, match="strength"):
        augmenter.set_strength(5)
    assert augmenter.strength == 0.0


def test_schedule_weakens_the_last_epochs() -> None:
    schedule = AugSchedule(last_epochs=2, final_strength=0.3)
    assert [schedule.strength_at(e, 5, base=1.0) for e in range(5)] == [1.0, 1.0, 1.0, 0.3, 0.3]
    assert AugSchedule().strength_at(9, 10, base=0.8) == 0.8


def test_library_warnings_while_building_become_config_errors() -> None:
    """albumentations only warns about this kernel size (and silently changes it): carclf refuses it."""
    with pytest.warns(UserWarning, match="Values less than 3 are not allowed"):
        A.MotionBlur(blur_limit=(1, 3))
    with pytest.raises(ConfigError, match="MotionBlur: invalid arguments .* less than 3"):
        AugConfig.from_dict({"transforms": [{"name": "MotionBlur", "params": {"blur_limit": [1, 3]}}]})
