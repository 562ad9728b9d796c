"""``python -m carclf predict``: table and JSON Lines output, folders, unreadable files, user errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import keras
import pytest

from carclf.cli import main

CAR = "cars/sf_dl_car_classification_ostrebko/3/3201.jpg"
CAT = "noncars/caffe_cat.jpg"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLF_SIZE = 32
CLASSES = ("0", "1")
DISPLAY = ("Lada Priora", "Ford Focus")


def tiny_classifier() -> keras.Model:
    """A throwaway classifier with the contract's structure: Input -> "backbone" -> "head" -> softmax."""
    backbone_in = keras.Input((CLF_SIZE, CLF_SIZE, 3))
    backbone = keras.Model(backbone_in, keras.layers.Conv2D(4, 3, strides=2)(backbone_in), name="backbone")
    head_in = keras.Input(backbone.output.shape[1:])
    logits = keras.layers.Dense(len(CLASSES))(keras.layers.GlobalAveragePooling2D()(head_in))
    head = keras.Model(head_in, logits, name="head")
    image = keras.Input((CLF_SIZE, CLF_SIZE, 3))
    return keras.Model(image, keras.layers.Activation("softmax")(head(backbone(image, training=False))))


@pytest.fixture()
def photo_dir(shared_data, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(shared_data / CAR, folder / "car.jpg")
    shutil.copy(shared_data / CAT, folder / "cat.jpg")
    (folder / "broken.jpg").write_bytes((shared_data / CAR).read_bytes()[:500])
    return folder


def test_json_lines_for_a_folder_with_an_unreadable_file(photo_dir, capsys):
    code = main(["predict", "default", str(photo_dir), "--json", "--tta", "4", "--top-k", "2"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # one photo could not be read
    by_name = {os.path.basename(item["source"]): item for item in lines}
    assert set(by_name) == {"car.jpg", "cat.jpg", "broken.jpg"}
    car, cat, broken = by_name["car.jpg"], by_name["cat.jpg"], by_name["broken.jpg"]
    assert car["is_car"] and not cat["is_car"]
    assert len(car["top_k"]) == 2 and len(car["views"]) == 4 and car["label"] == car["top_k"][0][0]
    assert "train" in car["notice"]
    assert broken["error"] and "broken.jpg" in broken["error"] and broken["label"] is None


def test_table_for_a_trained_bundle(photo_dir, tmp_path, capsys):
    from carclf.bundle import save_bundle

    meta = {"img_size": CLF_SIZE, "backbone": "tiny"}
    bundle = save_bundle(tiny_classifier(), tmp_path / "models" / "tiny", list(CLASSES), list(DISPLAY), meta)
    code = main(["predict", str(bundle), str(photo_dir / "car.jpg"), str(photo_dir / "cat.jpg")])
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(rows) == {"car.jpg", "cat.jpg"}
    assert " car " in rows["car.jpg"] and "not car" in rows["cat.jpg"]
    assert any(name in rows["car.jpg"] for name in DISPLAY)
    assert "note:" not in out  # only the default model carries a notice


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "models/no-such-bundle", CAR], "no such bundle"),
        (["predict", "default", "EMPTY_DIR"], "no image files"),
        (["predict", "default", CAR, "--top-k", "0"], "--top-k"),
        (["predict", "default", CAR, "--tta", "99"], "tta=99"),
        (["predict", "default", "a" * 5000], "File name too long"),  # the OS refuses it: still one line
    ],
)
def test_user_errors_exit_2_with_one_line(shared_data, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    argv = [str(tmp_path / "empty") if a == "EMPTY_DIR" else str(shared_data / a) if a == CAR else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err) < 300 and err.count("\n") == 1


def test_module_entry_point_runs_in_a_fresh_process(shared_data):
    done = subprocess.run(
        [sys.executable, "-m", "carclf", "predict", "default", str(shared_data / CAR), "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "CUDA_VISIBLE_DEVICES": ""},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["is_car"] and result["source"].endswith("3201.jpg")
