"""The Augmentation lab: widgets from the registry, seeded draws that change with the settings, saving a
named config that the Train page then offers."""

from __future__ import annotations

import io

import yaml
from PIL import Image

from app_helpers import app_env, open_page  # noqa: F401  (app_env is a fixture)


def _draw_urls(at) -> list[str]:
    return [img.proto.imgs[0].url for img in at.image if img.proto.imgs[0].caption.startswith("draw")]


def test_lab_grid_is_seeded_and_follows_the_widgets(app_env):
    at = open_page("augment_lab.py")
    assert not at.error, [e.value for e in at.error]
    first = _draw_urls(at)
    assert len(first) == 8
    assert len(set(first)) > 1  # random draws differ from each other
    at.run()
    assert _draw_urls(at) == first  # same seed, same settings: same images
    at.button(key="aug_new_seed").click().run()
    assert not at.exception
    second = _draw_urls(at)
    assert second != first
    at.slider(key="aug_default_strength").set_value(0.0).run()  # strength 0 = identity (resize only)
    assert len(set(_draw_urls(at))) == 1


def test_lab_widgets_come_from_the_registry_and_save(app_env):
    at = open_page("augment_lab.py")
    at.multiselect(key="aug_default_transforms").set_value(["HorizontalFlip", "Affine"]).run()
    assert not at.exception and not at.error
    rotate = at.slider(key="aug_default_Affine_rotate")
    assert (rotate.min, rotate.max) == (-45.0, 45.0)  # the registry's UI range
    rotate.set_value((-30.0, 30.0)).run()
    code = yaml.safe_load(at.code[0].value)
    assert [t["name"] for t in code["transforms"]] == ["HorizontalFlip", "Affine"]
    assert code["transforms"][1]["params"]["rotate"] == [-30.0, 30.0]
    at.text_input(key="aug_name").set_value("my rotations").run()
    at.button(key="aug_save").click().run()
    assert not at.error, [e.value for e in at.error]
    saved = app_env["augment"] / "my-rotations.yaml"
    assert yaml.safe_load(saved.read_text())["transforms"][1]["params"]["rotate"] == [-30.0, 30.0]

    train = open_page("train.py")
    options = train.selectbox(key="train_quick_aug").options
    assert "my-rotations" in options and "default" in options


def test_lab_rejects_a_reserved_name(app_env):
    at = open_page("augment_lab.py")
    at.text_input(key="aug_name").set_value("default").run()
    at.button(key="aug_save").click().run()
    assert not at.exception
    assert "built-in preset" in at.error[0].value


def test_lab_refuses_a_strip_in_one_line(app_env):
    """A 5000x2 upload once crashed the grid: the pre-resize made it 640,000 px long for the JPEG step."""
    at = open_page("augment_lab.py")
    strip = io.BytesIO()
    Image.new("RGB", (5000, 2), (90, 90, 90)).save(strip, "PNG")
    at.file_uploader(key="aug_upload").set_value(("strip.png", strip.getvalue(), "image/png")).run()
    assert not at.exception, at.exception
    assert len(at.error) == 1 and "strip" in at.error[0].value
