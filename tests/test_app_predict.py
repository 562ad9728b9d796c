"""The Predict page with the real default model on real photos: one photo in detail, many photos as a
table, bad files reported per file, the sample gallery, and a trained bundle chosen in the sidebar."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
from PIL import Image

from app_helpers import app_env, make_bundle, open_page, texts  # noqa: F401  (app_env is a fixture)

CAR = "cars/sf_dl_car_classification_ostrebko/0/3076.jpg"  # a Lada Priora from the competition
EXIF_CAR = "edge_cases/derived_format_variants_of_sf_images/exif_orientation6_class0_3076.jpg"
NON_CAR = "noncars/caffe_cat.jpg"


def _upload(at, files):
    at.file_uploader(key="predict_upload").set_value(files).run()
    assert not at.exception, at.exception
    return at


def _chart(at) -> dict:
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _captions(at) -> list[str]:
    return [img.proto.imgs[0].caption for img in at.image]


def test_one_car_photo_in_detail(app_env, shared_data):
    at = open_page("predict.py")
    assert not at.error, texts(at.error)
    assert at.slider(key="predict_tta").value == 1  # the default model's own TTA: off
    at.slider(key="predict_tta").set_value(8)
    _upload(at, ("3076.jpg", (shared_data / CAR).read_bytes(), "image/jpeg"))
    assert not at.error and not at.warning, texts(at.error) + texts(at.warning)
    verdict = at.success[0].value
    bars = _chart(at)["data"][0]
    assert len(bars["y"]) == 5  # the default top-k
    assert bars["y"][-1] in verdict  # the most probable class (drawn on top) is the verdict
    assert any("default model" in text.lower() for text in texts(at.info))  # the default-model notice
    captions = _captions(at)
    views = [c for c in captions if ":" in c and "%" in c]
    assert len(views) == 8 and views[0].startswith("original:")  # 8 TTA views, each with its top class
    assert any(c.startswith("Grad-CAM for") for c in captions)


def test_tta_off_and_fewer_classes(app_env, shared_data):
    at = open_page("predict.py")
    at.slider(key="predict_tta").set_value(1)
    at.toggle(key="predict_explain").set_value(False)
    at.slider(key="predict_top_k").set_value(2)
    _upload(at, ("car.jpg", (shared_data / EXIF_CAR).read_bytes(), "image/jpeg"))
    assert len(_chart(at)["data"][0]["y"]) == 2
    captions = _captions(at)
    assert not [c for c in captions if c.startswith("original:")]  # no per-view grid without TTA
    assert not [c for c in captions if c.startswith("Grad-CAM")]


def test_tta_starts_at_the_chosen_models_own(app_env, shared_data):
    bundle = make_bundle(app_env["models"], "tiny", ["3", "9"], ["VAZ-2110", "VAZ-21099"], tta=3)
    at = open_page("predict.py", model=str(bundle))
    assert at.slider(key="predict_tta").value == 3
    assert "default: the model's own, 3" in at.slider(key="predict_tta").help
    at.toggle(key="predict_explain").set_value(False)
    _upload(at, ("car.jpg", (shared_data / CAR).read_bytes(), "image/jpeg"))
    views = [c for c in _captions(at) if ":" in c and "%" in c]
    assert [c.split(":")[0] for c in views] == ["original", "flip", "center_crop"]
    at.sidebar.selectbox(key="carclf_model_picker").set_value("default").run()
    assert at.slider(key="predict_tta").value == 1  # another model: its own TTA again


def test_non_car_photo_says_not_a_car(app_env, shared_data):
    at = open_page("predict.py")
    _upload(at, ("cat.jpg", (shared_data / NON_CAR).read_bytes(), "image/jpeg"))
    assert not at.success
    assert "Not a car" in at.warning[0].value and "Car score" in at.warning[0].value


def _bad_files() -> list[tuple[str, bytes, str]]:
    truncated = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(truncated, "JPEG")
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 MP in a few kB
    strip = io.BytesIO()
    Image.new("RGB", (5000, 2), (90, 90, 90)).save(strip, "PNG")  # once a traceback when shown
    return [
        ("notes.jpg", b"this is a text file, not a photo", "image/jpeg"),
        ("empty.jpg", b"", "image/jpeg"),
        ("cut.jpg", truncated.getvalue()[:400], "image/jpeg"),
        ("huge.png", bomb.getvalue(), "image/png"),
        ("strip.png", strip.getvalue(), "image/png"),
    ]


def test_many_photos_table_with_bad_files(app_env, shared_data):
    at = open_page("predict.py")
    good = [("3076.jpg", (shared_data / CAR).read_bytes(), "image/jpeg"),
            ("cat.jpg", (shared_data / NON_CAR).read_bytes(), "image/jpeg")]
    _upload(at, good + _bad_files())
    errors = texts(at.error)
    assert len(errors) == 5, errors
    for name, reason in (("notes.jpg", "not an image"), ("empty.jpg", "empty"), ("cut.jpg", "truncated"),
                         ("huge.png", "too large"), ("strip.png", "strip")):
        assert any(e.startswith(name) and reason in e.lower() for e in errors), (name, errors)
    table = at.dataframe[0].value
    assert list(table["file"]) == [name for name, _, _ in good + _bad_files()]
    assert list(table["is car"][:2]) == [True, False]
    assert table["prediction"][1] == "not a car"  # the cat is never given a car's name...
    assert 0 < table["probability"][0] <= 1 and pd.isna(table["probability"][1])  # ...nor a car's probability
    assert table["prediction"][0] not in ("not a car", "unreadable")
    assert (table["prediction"][2:] == "unreadable").all()
    download = at.get("download_button")[0]
    assert "2 rows" in download.proto.label


def test_a_row_of_the_table_opens_that_photo_in_detail(app_env, shared_data):
    at = open_page("predict.py")
    at.toggle(key="predict_explain").set_value(False)
    photos = [("3076.jpg", (shared_data / CAR).read_bytes(), "image/jpeg"),
              ("cat.jpg", (shared_data / NON_CAR).read_bytes(), "image/jpeg"),
              ("notes.jpg", b"not a photo", "image/jpeg")]
    _upload(at, photos)
    assert at.selectbox(key="predict_detail").value is None and not at.success and not at.warning
    assert not at.get("plotly_chart")  # the table alone until a photo is chosen
    at.selectbox(key="predict_detail").set_value(1).run()
    assert "Not a car" in at.warning[0].value and not at.success
    assert at.dataframe[0].value["file"][1] == "cat.jpg"  # the table stays above the detail
    at.selectbox(key="predict_detail").set_value(0).run()
    verdict = at.success[0].value
    assert at.dataframe[0].value["prediction"][0] in verdict and _chart(at)["data"][0]["y"][-1] in verdict
    at.selectbox(key="predict_detail").set_value(2).run()  # the unreadable one: its reason, no traceback
    assert not at.exception and any(e.startswith("notes.jpg") for e in texts(at.error))
    _upload(at, photos[:2])  # fewer photos: the choice no longer points past the end
    assert at.selectbox(key="predict_detail").value is None and not at.error


def test_photo_uploads_are_limited_in_size_and_number(app_env, shared_data):
    from carclf.ui.photo_upload import MAX_PHOTO_MB, MAX_PHOTOS

    at = open_page("predict.py")
    uploader = at.get("file_uploader")[0].proto
    assert uploader.max_upload_size_mb == MAX_PHOTO_MB  # the browser refuses larger files...
    assert {".jpg", ".png", ".webp"} <= set(uploader.type) and ".zip" not in uploader.type
    huge = ("huge.jpg", b"\xff\xd8" + b"\0" * (MAX_PHOTO_MB * 1_000_000), "image/jpeg")
    _upload(at, [huge, ("3076.jpg", (shared_data / CAR).read_bytes(), "image/jpeg")])
    assert any(e.startswith("huge.jpg") and f"{MAX_PHOTO_MB} MB" in e for e in texts(at.error))  # ...and so does the server
    assert at.success  # the other photo is answered, in detail: it is the only one left
    many = [(f"{i}.jpg", b"not a photo", "image/jpeg") for i in range(MAX_PHOTOS + 3)]
    _upload(at, many)
    assert any(f"the first {MAX_PHOTOS}" in w for w in texts(at.warning))
    assert len(at.dataframe[0].value) == MAX_PHOTOS


@pytest.mark.parametrize("sample", ["car_red_sports", "noncar_cat"])
def test_sample_gallery(app_env, sample):
    at = open_page("predict.py")
    at.button(key=f"predict_sample_{sample}").click().run()
    assert not at.exception
    if sample.startswith("car"):
        assert "sports car" in at.success[0].value
    else:
        assert "Not a car" in at.warning[0].value


def test_choosing_default_loads_the_built_in_model_even_beside_a_models_folder(app_env, monkeypatch, tmp_path):
    """carclf.load_model(None) means "the newest bundle of ./models": the sidebar's Default must not."""
    from carclf.ui import loaders

    monkeypatch.chdir(tmp_path)
    make_bundle(tmp_path / "models", "stray", ["3", "9"], ["VAZ-2110", "VAZ-21099"], tta=3)
    predictor = loaders.load_predictor(None)
    assert predictor.kind != "trained" and predictor.name != "stray", predictor
    assert len(predictor.class_names) != 2


def test_one_strip_upload_is_one_red_line(app_env):
    """A lone 5000x2 PNG: refused when read, not a traceback when Streamlit shrinks it for display."""
    at = open_page("predict.py")
    name, content, mime = _bad_files()[-1]
    _upload(at, (name, content, mime))
    assert [e for e in texts(at.error) if "strip" in e], texts(at.error)
