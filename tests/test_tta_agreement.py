"""One TTA: a run's reported TTA score is what evaluating its bundle gives, and "off" means 1 everywhere.

The run trains a real (tiny) model below the gate's 224 px, where training's final TTA score and the
Predictor used to render views differently; the photos are real car photos of three brands.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from carclf import runs
from carclf.batch import predict_files
from carclf.bundle import load_bundle, save_bundle
from carclf.calibration import apply_temperature
from carclf.cli import main
from carclf.errors import ConfigError
from carclf.evaluation import EvalReport, evaluate
from carclf.predict import clear_cache, load_model, model_tta
from carclf.train import train
from carclf.tta import OFF, own_tta, tta_views, view_count
from inference_helpers import COLOURS, PHOTOS, colour_classifier, copy_photos
from train_helpers import tiny_config

BRANDS = "cars/mfismail_car_brands_3"  # audi, lamborghini, mercedes: train_*.jpg and test_*.jpg photos
IMG_SIZE = 64  # below the gate's 224 px: the case where the two renderings used to differ
TTA = 4


def _split_brands(shared_data, root):
    """train/<brand>/ from the train_* photos, val/<brand>/ from the test_* photos (copies in tmp)."""
    for brand_dir in sorted(p for p in (shared_data / BRANDS).iterdir() if p.is_dir()):
        for photo in sorted(brand_dir.glob("*.jp*g")):
            split = "val" if photo.name.startswith("test_") else "train"
            (root / split / brand_dir.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(photo, root / split / brand_dir.name / photo.name)
    return root / "train", root / "val"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """One real run with tta > 1 and a separate validation folder, so evaluate sees the very same photos."""
    root = tmp_path_factory.mktemp("agree")
    train_dir, val_dir = _split_brands(shared_data, root)
    config = tiny_config(
        train_dir, root / "models", name="agree", img_size=IMG_SIZE, weights="imagenet", tta=TTA,
        val_data=str(val_dir), early_stopping=False,
        stages=[{"epochs": 3, "learning_rate": 1e-2, "unfreeze": 0},
                {"epochs": 1, "learning_rate": 1e-4, "unfreeze": 2}],
    )
    paths = runs.create_run(config, root / "runs")
    status = train(config, paths.root, verbose=0)
    assert status["state"] == runs.FINISHED, status.get("error")
    clear_cache()
    yield status, val_dir
    clear_cache()


@pytest.mark.slow
def test_evaluating_the_bundle_reproduces_the_runs_tta_score(trained):
    status, val_dir = trained
    metrics, bundle = status["val_metrics"], status["bundle"]
    assert metrics["tta"] == TTA and load_bundle(bundle).img_size == IMG_SIZE
    report = evaluate(bundle, val_dir, tta=TTA)
    assert report.n_images == metrics["val_images"] == len(list(val_dir.rglob("*.jp*g")))
    assert report.accuracy == metrics["val_accuracy_tta"], (report.accuracy, metrics)
    default = evaluate(bundle, val_dir)  # no tta given: the bundle's own
    assert default.tta == TTA and default.accuracy == metrics["val_accuracy_tta"]
    assert status["final_val_accuracy"] == default.accuracy  # the headline, reproduced by default


@pytest.mark.slow
def test_predictor_sees_the_views_training_scored(trained):
    """Per photo, not just in total: the Predictor's TTA answer is the training model's mean over the views
    rendered at the model's own size (the old Predictor rendered at the gate's 224 px and resized)."""
    status, val_dir = trained
    bundle = load_bundle(status["bundle"])
    photos = sorted(val_dir.rglob("*.jp*g"))
    results = load_model(status["bundle"]).predict_batch(photos, tta=TTA)
    for photo, result in zip(photos, results):
        views, _ = tta_views(photo, TTA, IMG_SIZE)
        expected = np.asarray(bundle.model.predict_on_batch(views.astype("float32"))).mean(axis=0)
        np.testing.assert_allclose(result.raw_probabilities, expected, atol=1e-5, err_msg=photo.name)
        # what it shows is that mean calibrated with the run's TTA temperature (carclf.calibration)
        calibrated = apply_temperature(expected, result.temperature)
        np.testing.assert_allclose(result.probabilities, calibrated, atol=1e-4, err_msg=photo.name)


@pytest.mark.slow
def test_tta_one_and_zero_are_the_photo_alone(trained):
    status, val_dir = trained
    off = evaluate(status["bundle"], val_dir, tta=1)
    # the run's plain score (Keras reports it in float32; one photo is 1/20 of it)
    assert off.tta == OFF and off.accuracy == pytest.approx(status["val_metrics"]["val_accuracy"], abs=1e-6)
    old_spelling = evaluate(status["bundle"], val_dir, tta=0)
    assert old_spelling.tta == OFF and old_spelling.files == off.files


# --- the convention, on a hand-checkable bundle -----------------------------------------------------------


@pytest.mark.parametrize("tta, views", [(1, 1), (0, 1), (3, 3), (12, 12)])
def test_view_count_reads_zero_as_off(tta, views):
    assert view_count(tta) == views


@pytest.mark.parametrize("tta", [-1, 2.5, True, "4"])
def test_view_count_rejects_non_counts(tta):
    with pytest.raises(ConfigError, match=r"whole number of views >= 1 \(1 = off\)"):
        view_count(tta)


@pytest.mark.parametrize("meta, own", [({}, 1), ({"tta": None}, 1), ({"tta": 0}, 1), ({"tta": 1}, 1),
                                       ({"tta": 4}, 4), ({"tta": "many"}, 1)])
def test_a_bundles_own_tta_comes_from_its_meta(meta, own):
    assert own_tta(meta) == own


@pytest.fixture(scope="module")
def colour_bundle(tmp_path_factory):
    """A real saved bundle whose run measured its score over 3 views."""
    models = tmp_path_factory.mktemp("models")
    return save_bundle(colour_classifier(), models / "colour3", list(COLOURS),
                       meta={"backbone": "colour-test", "tta": 3})


def _predict_json(capsys, *argv) -> list[dict]:
    assert main(["predict", *argv, "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_predict_cli_defaults_to_the_bundles_tta_and_1_turns_it_off(colour_bundle, shared_data, capsys):
    photo = str(shared_data / PHOTOS["red"][1])
    assert model_tta(colour_bundle) == 3 and load_model(colour_bundle).default_tta == 3
    [default] = _predict_json(capsys, str(colour_bundle), photo)
    assert [v["name"] for v in default["views"]] == ["original", "flip", "center_crop"]
    [off] = _predict_json(capsys, str(colour_bundle), photo, "--tta", "1")
    [old_off] = _predict_json(capsys, str(colour_bundle), photo, "--tta", "0")
    assert len(off["views"]) == len(old_off["views"]) == 1
    assert off["top_k"] == old_off["top_k"] != default["top_k"]
    # the photo alone is the first view of the default answer
    assert off["label"] == default["views"][0]["label"]
    assert off["probability"] == pytest.approx(default["views"][0]["probability"], abs=1e-5)


def test_evaluate_cli_defaults_to_the_bundles_tta(colour_bundle, shared_data, tmp_path, capsys):
    data = copy_photos(shared_data, {colour: PHOTOS[colour][:1] for colour in COLOURS}, tmp_path / "val")
    assert main(["evaluate", str(colour_bundle), "--data", str(data), "--json", "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == 3
    assert main(["evaluate", str(colour_bundle), "--data", str(data), "--json", "--no-progress", "--tta", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["tta"] == 1


def test_many_files_default_to_the_bundles_tta(colour_bundle, shared_data):
    """predict_files is what evaluate and submit run: without tta it averages the bundle's own views."""
    model = load_model(colour_bundle)
    paths = [shared_data / PHOTOS[colour][0] for colour in COLOURS]
    default = predict_files(model, paths).probabilities
    three = [r.probabilities for r in model.predict_batch(paths, tta=3)]
    np.testing.assert_allclose(default, three, atol=1e-6)
    assert np.abs(default - predict_files(model, paths, tta=1).probabilities).max() > 1e-4


@pytest.mark.parametrize("command", ["predict", "evaluate", "submit"])
def test_help_says_1_is_off_and_the_default_is_the_models_own(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(1 = off; default: the model's own" in text and "0 = off" not in text


def test_an_old_report_saved_with_tta_0_reads_back_as_off(colour_bundle, shared_data, tmp_path):
    data = copy_photos(shared_data, {colour: PHOTOS[colour][:1] for colour in COLOURS}, tmp_path / "val")
    folder = evaluate(colour_bundle, data, tta=1).save(tmp_path / "report")
    summary = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    (folder / "report.json").write_text(json.dumps({**summary, "tta": 0}), encoding="utf-8")
    assert EvalReport.load(folder).tta == OFF
