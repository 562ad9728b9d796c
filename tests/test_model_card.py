"""The model card (carclf/model_card.py, `bundle info`, the sidebar's "About this model"): what a real bundle
is, read from its meta.json; damaged fields lose their row, never raise; public mode names no server path."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from app_helpers import REPO_ROOT, app_env, make_bundle, open_page  # noqa: F401  (app_env is a fixture)
from carclf.model_card import card_text, model_card
from carclf.ui.widgets import markdown_text

CLASSES = ["3", "9"]
NAMES = ["VAZ-2110", "VAZ-21099"]


def _meta(**extra) -> dict:
    summary = {"root": "/srv/secret/datasets/brands", "layout": "folders", "num_images": 120,
               "train_images": 96, "val_images": 24, "excluded": 3, "relabelled": 0}
    calibration = {"temperature": {"1": 0.8, "4": 0.7}, "fits": {}}
    return {"format": 1, "backbone": "efficientnet_lite0", "img_size": 272, "class_names": CLASSES,
            "display_names": NAMES, "val_metrics": {"val_accuracy": 0.79, "val_accuracy_tta": 0.8125, "val_images": 24},
            "run_id": "brands-20261204-101010", "data_summary": summary, "gate_threshold": 0.09,
            "created_at": "2026-12-04T10:20:30+00:00", "tta": 4, "calibration": calibration,
            "versions": {"carclf": "0.1.0", "keras": "3.15.1"}, **extra}


def test_card_of_a_trained_bundle_says_what_it_is():
    card = dict(model_card(_meta()))
    assert card["Classes"] == "2: VAZ-2110, VAZ-21099"
    assert card["Backbone"] == "efficientnet_lite0 at 272 px"
    assert card["Validation"].startswith("val acc 81.2% (TTA)") and "24 photos" in card["Validation"]
    assert "120 photos (96 train, 24 validation)" in card["Trained on"] and "3 excluded" in card["Trained on"]
    assert "/srv/secret/datasets/brands" in card["Trained on"]
    assert card["TTA"] == "4 views by default"
    assert card["Calibration"] == "temperature T 0.80 (no TTA), T 0.70 (4 views)"
    assert card["Not sure below"].startswith("50%")
    assert "0.09" in card["Car gate"] and "2026-12-04 10:20" in card["Run"]


def test_public_card_names_the_folder_not_its_path():
    text = card_text(_meta(), show_paths=False)
    assert "/srv" not in text and "from brands" in text


def test_many_classes_are_cut_short():
    names = [f"class{i}" for i in range(30)]
    assert model_card(_meta(class_names=names, display_names=names))[0][1].endswith("class11 and 18 more")


@pytest.mark.parametrize("field, value", [
    ("display_names", "x"), ("img_size", "big"), ("val_metrics", [1]), ("data_summary", {"num_images": "9"}),
    ("calibration", {"temperature": {"1": "hot"}}), ("gate_threshold", True), ("tta", "zz"), ("versions", 3),
    ("created_at", 5), ("run_id", {"a": 1}), ("backbone", None),
])
def test_a_damaged_field_loses_its_row_and_nothing_else(field, value):
    rows = dict(model_card(_meta(**{field: value})))
    assert len(rows) >= 7 and all(isinstance(text, str) and text for text in rows.values())


def test_a_bundle_without_calibration_or_gate_says_so():
    card = dict(model_card(_meta(calibration=None, gate_threshold=None, tta=None)))
    assert card["Calibration"].startswith("none") and "Not sure below" not in card
    assert "default" in card["Car gate"] and card["TTA"].startswith("off")


def test_bundle_info_command(app_env):
    bundle = make_bundle(app_env["models"], "tiny", CLASSES, NAMES, tta=3)
    run = [sys.executable, "-m", "carclf", "bundle", "info", str(bundle)]
    text = subprocess.run(run, cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "Classes:" in text and "VAZ-21099" in text and "efficientnet_lite0 at 32 px" in text
    data = json.loads(subprocess.run(run + ["--json"], cwd=REPO_ROOT, capture_output=True, text=True,
                                     check=True).stdout)
    assert data["card"]["TTA"] == "3 views by default" and data["meta"]["class_names"] == CLASSES
    missing = subprocess.run(run[:-1] + [str(bundle.parent / "nothing")], cwd=REPO_ROOT, capture_output=True,
                             text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and "Traceback" not in missing.stderr


def _about(at) -> str:
    (expander,) = [e for e in at.sidebar.expander if e.label == "About this model"]
    return "\n".join(m.value for m in expander.markdown) + "\n".join(c.value for c in expander.caption)


def test_sidebar_card_of_the_chosen_model(app_env, monkeypatch):
    bundle = make_bundle(app_env["models"], "tiny", CLASSES, ["VAZ_2110*", "VAZ-21099"],
                         extra_meta={"data_summary": {"root": str(app_env["models"].parent / "brands"),
                                                      "num_images": 12}})
    at = open_page("predict.py", model=str(bundle))
    about = _about(at)
    assert "VAZ\\_2110\\*" in about  # shown literally, not as markdown
    assert markdown_text(str(app_env["models"].parent)) in about  # local mode: the training folder's path
    monkeypatch.setenv("CARCLF_MODE", "public")
    at = open_page("predict.py", model=str(bundle))
    about = _about(at)
    assert "from brands" in about and markdown_text(str(app_env["models"].parent)) not in about
    at = open_page("predict.py", model="default")
    assert "body type" in _about(at)
