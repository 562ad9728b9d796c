"""The Evaluate page with a real (tiny) bundle on real photos; and the sidebar model choice that every
page shares."""

from __future__ import annotations

import json

import numpy as np
import pytest

from streamlit.testing.v1 import AppTest

from app_helpers import APP, RUN_TIMEOUT_S, app_env, copy_photos, make_bundle, open_page, texts  # noqa: F401

SF = "cars/sf_dl_car_classification_ostrebko"
LAYOUT = {
    "3": [f"{SF}/3/3201.jpg", "edge_cases/derived_format_variants_of_sf_images/cmyk_class3_3201.jpg"],
    "9": [f"{SF}/9/295500.jpg"],
}


@pytest.fixture
def bundle(app_env):
    return make_bundle(app_env["models"], "tiny", ["3", "9"], ["VAZ-2110", "VAZ-21099"])


def test_evaluate_report_and_confusion_cells(bundle, shared_data, tmp_path):
    data = copy_photos(shared_data, LAYOUT, tmp_path / "val")
    at = open_page("evaluate.py", model=str(bundle))
    assert at.selectbox(key="eval_model").value == str(bundle)  # starts at the sidebar's choice
    at.text_input(key="eval_data").set_value(str(data)).run()
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error, texts(at.error)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Photos"] == "3"
    confusion = np.array(json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]["z"])
    assert confusion.sum() == 3 and list(confusion.sum(axis=1)) == [2, 1]  # rows are the true classes
    assert metrics["Accuracy"] == f"{np.trace(confusion) / 3:.1%}"
    per_class = at.dataframe[0].value
    assert list(per_class["class"]) == ["3", "9"] and list(per_class["support"]) == [2, 1]
    for true in range(2):
        for pred in range(2):
            at.selectbox(key="eval_true").set_value(str([3, 9][true]))
            at.selectbox(key="eval_pred").set_value(str([3, 9][pred])).run()
            assert not at.exception
            heading = [s.value for s in at.subheader][-1]
            assert heading.endswith(f": {confusion[true, pred]} photo" + ("" if confusion[true, pred] == 1 else "s")), heading
            assert len(at.image) == confusion[true, pred]


def test_evaluate_starts_at_the_bundles_own_tta(app_env, shared_data, tmp_path):
    bundle = make_bundle(app_env["models"], "tiny3", ["3", "9"], ["VAZ-2110", "VAZ-21099"], tta=3)
    data = copy_photos(shared_data, LAYOUT, tmp_path / "val")
    at = open_page("evaluate.py", model=str(bundle))
    assert at.slider(key="eval_tta").value == 3
    at.text_input(key="eval_data").set_value(str(data)).run()
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert any("TTA over 3 views" in text for text in texts(at.caption))
    at.selectbox(key="eval_model").set_value("default").run()
    assert at.slider(key="eval_tta").value == 1  # the default model's own: off


def test_evaluate_unknown_class_is_one_line(bundle, shared_data, tmp_path):
    data = copy_photos(shared_data, {**LAYOUT, "audi": ["cars/vidhyagupta_car_brands_5/audi/test_66.jpg"]},
                       tmp_path / "val")
    at = open_page("evaluate.py", model=str(bundle))
    at.text_input(key="eval_data").set_value(str(data)).run()
    at.button(key="eval_run").click().run()
    assert not at.exception
    assert "does not know: audi" in at.error[0].value


def test_sidebar_model_choice_is_shared_by_all_pages(bundle, shared_data):
    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S).run()  # app.py on its default page
    picker = at.sidebar.selectbox(key="carclf_model_picker")
    assert picker.value == str(bundle)  # the newest bundle is preselected
    assert picker.options[-1].startswith("Default")
    photo = ("3201.jpg", (shared_data / SF / "3/3201.jpg").read_bytes(), "image/jpeg")
    at.file_uploader(key="predict_upload").set_value(photo).run()
    assert not at.exception
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert set(chart["data"][0]["y"]) == {"VAZ-2110", "VAZ-21099"}  # the bundle's display names
    at.sidebar.selectbox(key="carclf_model_picker").set_value("default").run()
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert "VAZ-2110" not in chart["data"][0]["y"]  # body types from the default model now
    assert any("default model" in text.lower() for text in texts(at.info))
    at.switch_page("pages/data.py").run()
    at.switch_page("pages/evaluate.py").run()
    assert at.sidebar.selectbox(key="carclf_model_picker").value == "default"  # the choice survived two pages
    assert at.selectbox(key="eval_model").value == "default"


def test_reliability_diagram_beside_the_confusion_matrix(app_env, shared_data, tmp_path):
    bundle = make_bundle(app_env["models"], "tiny-cal", ["3", "9"], ["VAZ-2110", "VAZ-21099"],
                         extra_meta={"calibration": {"temperature": {"1": 0.5}}})
    data = copy_photos(shared_data, LAYOUT, tmp_path / "val")
    at = open_page("evaluate.py", model=str(bundle))
    at.text_input(key="eval_data").set_value(str(data)).run()
    at.button(key="eval_run").click().run()
    assert not at.exception and not at.error, texts(at.error)
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert charts[0]["data"][0]["type"] == "heatmap"  # the confusion matrix comes first, as before
    diagram = next(chart for chart in charts if chart["layout"]["title"]["text"].startswith("Reliability"))
    assert "→" in diagram["layout"]["title"]["text"]  # ECE before -> after the temperature
    bars = next(trace for trace in diagram["data"] if trace["type"] == "bar")
    assert bars["name"] == "calibrated (T 0.50)" and len(bars["x"]) == 10
    assert sum(count for count, _ in bars["customdata"]) == 3  # every evaluated photo sits in one bin
    before = next(trace for trace in diagram["data"] if trace.get("name") == "before calibration")
    assert all(0 <= y <= 1 for y in before["y"])
    assert any("calibration (temperature 0.500)" in text for text in texts(at.caption))
