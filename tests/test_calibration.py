"""Calibration: temperature scaling fitted at the end of training, applied by the Predictor, carried by
exports, scored by evaluate, and the "not sure" verdict on the Predict page."""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest

from carclf import calibration
from carclf.bundle import save_bundle
from app_helpers import app_env, make_bundle, open_page, texts  # noqa: F401  (app_env is a fixture)
from inference_helpers import (COLOURS, PHOTOS, colour_classifier, colour_predictor, copy_photos, expected_colour,
                               save_colour_bundle)

# A calibration written into the colour bundle: the colour model (logit gap 2 nats per 0.1 of channel mean)
# softened 2.5x without TTA and 3x with 3 views, so calibrated answers differ clearly from the raw ones.
COLOUR_CALIBRATION = {"temperature": {"1": 2.5, "3": 3.0}, "fits": {}}

BRANDS = "cars/vidhyagupta_car_brands_5"
# Photos per class trained on in the tiny real run; the rest of the class is its validation set.
TRAIN_PER_CLASS = 10


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# --- the numbers -----------------------------------------------------------------------------------------
def test_scores_by_hand():
    probs = np.array([[0.95, 0.05], [0.85, 0.15], [0.25, 0.75], [0.55, 0.45]])
    labels = [0, 1, 1, 0]  # right, wrong, right, right
    assert calibration.ece(probs, labels) == pytest.approx((0.05 + 0.85 + 0.25 + 0.45) / 4)
    assert calibration.nll(probs, labels) == pytest.approx(-np.log([0.95, 0.15, 0.75, 0.55]).mean())
    assert calibration.brier(probs, labels) == pytest.approx(2 * (0.05**2 + 0.85**2 + 0.25**2 + 0.45**2) / 4)
    bins = calibration.reliability(probs, labels)
    assert [b.count for b in bins] == [0, 0, 0, 0, 0, 1, 0, 1, 1, 1]
    assert bins[8].accuracy == 0.0 and bins[8].confidence == pytest.approx(0.85)
    assert calibration.reliability(np.array([[0.7, 0.3]]), [0])[6].count == 1  # 0.7 is in (0.6, 0.7]


def test_fit_recovers_a_known_temperature_and_never_changes_the_answer():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (3000, 5))
    labels = np.array([rng.choice(5, p=row) for row in softmax(2 * logits)])  # the truth is twice as sharp
    model = softmax(logits)  # an under-confident model: T = 0.5 would be right
    fit = calibration.fit_temperature(model, labels)
    assert fit.temperature == pytest.approx(0.5, abs=0.05)
    calibrated = calibration.apply_temperature(model, fit.temperature)
    assert (calibrated.argmax(axis=1) == model.argmax(axis=1)).all()
    assert calibration.ece(calibrated, labels) < 0.03 < 0.1 < calibration.ece(model, labels)
    assert fit.nll_after < fit.nll_before and "fitted on 3000" in fit.reason
    np.testing.assert_allclose(calibration.apply_temperature(model, 1.0), model)


def test_few_validation_photos_are_checked_or_skipped_and_say_so():
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 1.5, (12, 4))
    honest = softmax(logits)
    labels = np.array([rng.choice(4, p=row) for row in honest])
    skipped = calibration.fit_temperature(honest, labels)  # already calibrated: a fit only learns noise
    assert skipped.temperature == 1.0 and "not calibrated: only 12 validation photos" in skipped.reason
    under = softmax(np.eye(4)[labels] * 1.0 + rng.normal(0, 0.3, (12, 4)))  # right, but only ~45 % sure
    kept = calibration.fit_temperature(under, labels)
    assert kept.temperature < 0.7 and "kept: leave-one-out" in kept.reason
    tiny = calibration.fit_temperature(under[:3], labels[:3])
    assert tiny.temperature == 1.0 and "fewer than" in tiny.reason
    # a validation set the model gets entirely right does not drive T to 0 (infinite confidence)
    right = calibration.fit_temperature(np.tile([[0.7, 0.1, 0.1, 0.1]], (40, 1)), [0] * 40)
    assert right.temperature > 0.2


def test_temperature_for_picks_the_fit_matching_the_views():
    stored = calibration.Calibration.from_meta({"calibration": {"temperature": {"1": 0.8, "4": 0.6}}})
    assert [stored.temperature_for(v) for v in (1, 2, 4, 8)] == [0.8, 0.6, 0.6, 0.6]
    assert calibration.Calibration.from_meta({}) is None
    assert calibration.Calibration.from_meta({"calibration": {"temperature": {"1": "x"}}}) is None
    assert calibration.uncertain_threshold({}) is None  # no calibration: never "not sure"


# --- training: a real tiny run on real photos ------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, shared_data):
    """ImageNet Lite0 at 64 px, the head on cached features, on three real brands; 30 validation photos."""
    from carclf import runs
    from carclf.data import list_images
    from carclf.train import train
    from train_helpers import tiny_config

    root = tmp_path_factory.mktemp("calibrated")
    layout_train, layout_val = {}, {}
    for brand in ("audi", "ferrari", "mercedes"):
        photos = [str(p.relative_to(shared_data)) for p in list_images(shared_data / BRANDS / brand)]
        layout_train[brand], layout_val[brand] = photos[:TRAIN_PER_CLASS], photos[TRAIN_PER_CLASS:]
    train_dir = copy_photos(shared_data, layout_train, root / "train")
    val_dir = copy_photos(shared_data, layout_val, root / "val")
    config = tiny_config(train_dir, root / "models", name="calib", img_size=64, weights="imagenet", tta=2,
                         val_data=str(val_dir),
                         stages=[{"epochs": 6, "learning_rate": 1e-2, "unfreeze": "none", "cached_views": 2}])
    paths = runs.create_run(config, root / "runs")
    log = io.StringIO()
    with contextlib.redirect_stdout(log):  # what a detached run writes to its log file
        status = train(config, paths.root, verbose=0)
    assert status["state"] == runs.FINISHED, status.get("error")
    return status, log.getvalue(), val_dir


@pytest.mark.slow
def test_training_fits_temperatures_that_lower_nll_on_its_validation_photos(trained):
    from carclf.data import scan_dataset
    from carclf.predict import load_model

    status, log, val_dir = trained
    model = load_model(status["bundle"])
    fits = model.meta["calibration"]["fits"]
    assert set(model.meta["calibration"]["temperature"]) == {"1", "2"} and model.meta["uncertain_below"] == 0.5
    assert fits["1"]["photos"] >= calibration.MIN_FIT_PHOTOS
    assert "calibration (no TTA): temperature" in log and "calibration (TTA 2): temperature" in log

    info = scan_dataset(val_dir)
    paths_, labels = [item.path for item in info.items], [item.label for item in info.items]
    assert list(model.class_names) == list(info.classes)
    for views in (1, 2):
        results = model.predict_batch(paths_, tta=views)
        raw = np.array([r.raw_probabilities for r in results])
        shown = np.array([r.probabilities for r in results])
        temperature = model.temperature_for(views)
        assert temperature != 1.0 and all(r.temperature == temperature for r in results)
        assert calibration.nll(shown, labels) < calibration.nll(raw, labels)  # on the photos it was fitted on
        assert (shown.argmax(axis=1) == raw.argmax(axis=1)).all()
        assert calibration.nll(raw, labels) == pytest.approx(fits[str(views)]["nll_before"], abs=1e-3)


# --- the Predictor, evaluate, the CLI ----------------------------------------------------------------------
@pytest.fixture
def colour_photos(shared_data, tmp_path):
    return copy_photos(shared_data, {colour: PHOTOS[colour] for colour in COLOURS}, tmp_path / "photos")


def calibrated_colour_bundle(models_dir, name="colour-cal", uncertain_below=0.5):
    meta = {"backbone": "colour-test", "calibration": COLOUR_CALIBRATION, "uncertain_below": uncertain_below}
    return save_bundle(colour_classifier(), models_dir / name, COLOURS, meta=meta)


def test_a_bundle_without_calibration_answers_exactly_as_before(tmp_path, colour_photos):
    from carclf.batch import predict_files

    predictor = colour_predictor(save_colour_bundle(tmp_path / "models"))
    assert predictor.calibration is None and predictor.uncertain_below is None
    photos = sorted(colour_photos.rglob("*.*"))
    for result in predictor.predict_batch(photos, tta=3):
        assert result.probabilities == result.raw_probabilities and result.temperature is None
        assert not result.uncertain and result.to_dict()["uncertain"] is False
    files = predict_files(predictor, photos, tta=1)
    assert files.temperature is None and np.array_equal(files.probabilities, files.raw_probabilities)


def test_predictor_applies_the_temperature_of_the_views_it_averages(tmp_path, colour_photos):
    predictor = colour_predictor(calibrated_colour_bundle(tmp_path / "models"))
    photo = sorted(colour_photos.rglob("*.*"))[0]
    for views, temperature in ((1, 2.5), (3, 3.0)):
        result = predictor.predict(photo, tta=views)
        expected = calibration.apply_temperature(np.array(result.raw_probabilities), temperature)
        np.testing.assert_allclose(result.probabilities, expected, atol=1e-9)
        assert result.temperature == temperature and result.label == COLOURS[int(np.argmax(expected))]
        assert max(result.probabilities) < max(result.raw_probabilities)  # T > 1 softens
    views = predictor.predict(photo, tta=3).views
    raw_first = np.array(predictor.predict(photo, tta=1).raw_probabilities)
    np.testing.assert_allclose(views[0].probabilities, calibration.apply_temperature(raw_first, 2.5), atol=1e-6)


def test_evaluate_json_scores_calibration_before_and_after(tmp_path, colour_photos, capsys):
    from carclf.cli import main

    bundle = calibrated_colour_bundle(tmp_path / "models")
    code = main(["evaluate", str(bundle), "--data", str(colour_photos), "--json", "--tta", "1", "--no-progress"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["accuracy"] == 1.0  # every photo's dominant colour is its folder
    measured = report["calibration"]
    assert measured["temperature"] == 2.5
    assert len(measured["after"]["bins"]) == calibration.BINS
    assert sum(b["count"] for b in measured["after"]["bins"]) == report["n_images"] == 9
    # softened answers that are all right: less confident, so a worse NLL and ECE than the raw ones
    assert measured["after"]["nll"] > measured["before"]["nll"] and measured["after"]["ece"] > measured["before"]["ece"]
    assert measured["before"]["accuracy"] == measured["after"]["accuracy"] == 1.0
    main(["evaluate", str(bundle), "--data", str(colour_photos), "--tta", "1", "--no-progress"])
    assert "calibration (temperature 2.500): ECE" in capsys.readouterr().out


def test_a_skipped_fit_is_reported_as_not_calibrated_not_as_temperature_one(tmp_path, colour_photos, capsys):
    """Training stores T 1 when it skips the fit (too few validation photos): no output may claim a calibration."""
    from carclf.cli import main

    reason = calibration.fit_temperature(np.array([[0.9, 0.1], [0.2, 0.8]]), [0, 1]).reason
    meta = {"backbone": "colour-test", "uncertain_below": 0.5,
            "calibration": {"temperature": {"1": 1.0}, "fits": {"1": {"temperature": 1.0, "reason": reason}}}}
    bundle = save_bundle(colour_classifier(), tmp_path / "models" / "skipped", COLOURS, meta=meta)
    predictor = colour_predictor(bundle)
    result = predictor.predict(sorted(colour_photos.rglob("*.*"))[0], tta=1)
    assert result.temperature is None and result.probabilities == result.raw_probabilities
    assert predictor.uncertain_below == 0.5  # the "not sure" verdict still works on the raw probabilities
    main(["evaluate", str(bundle), "--data", str(colour_photos), "--json", "--tta", "1", "--no-progress"])
    measured = json.loads(capsys.readouterr().out)["calibration"]
    assert measured["temperature"] is None and measured["not_calibrated"] == reason
    assert reason.startswith("not calibrated: 2 validation photo(s)")
    main(["evaluate", str(bundle), "--data", str(colour_photos), "--tta", "1", "--no-progress"])
    out = capsys.readouterr().out
    assert f"probabilities ({reason}): ECE" in out and "temperature 1.000" not in out


def test_predict_json_says_not_sure_under_the_bundles_threshold(tmp_path, colour_photos, capsys):
    from carclf.cli import main

    photos = [str(p) for p in sorted(colour_photos.rglob("*.*"))]
    answers = {}
    for threshold in (0.0, 1.0):
        bundle = calibrated_colour_bundle(tmp_path / f"models{threshold}", uncertain_below=threshold)
        main(["predict", str(bundle), *photos, "--json", "--tta", "1", "--no-progress"])
        answers[threshold] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert not any(a["uncertain"] for a in answers[0.0]) and all(a["uncertain"] for a in answers[1.0])
    assert all(a["temperature"] == 2.5 for a in answers[1.0])
    main(["predict", str(tmp_path / "models1.0" / "colour-cal"), photos[0], "--tta", "1", "--no-progress"])
    assert "not sure" in capsys.readouterr().out


# --- export ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["savedmodel", "tflite"])
def test_exports_carry_the_temperature_and_parity_checks_it(tmp_path, colour_photos, form):
    from carclf.export import PARITY_FILE, export_model

    bundle = calibrated_colour_bundle(tmp_path / "models")
    out = tmp_path / ("sm" if form == "savedmodel" else "colour.tflite")
    result = export_model(bundle, form, out, parity_images=colour_photos)
    assert result.parity.passed and result.parity.max_abs_diff <= 1e-5, result.parity
    record = json.loads((result.path.parent if form == "tflite" else result.path).joinpath(PARITY_FILE).read_text())
    assert record["temperature"] == 2.5 and record["output"].startswith("calibrated")

    # the artefact itself returns what the Predictor shows without TTA, not the raw softmax
    from carclf.export import FORMATS
    from carclf.images import load_rgb_array

    photos = sorted(colour_photos.rglob("*.*"))
    batch = np.stack([load_rgb_array(p, size=32) for p in photos]).astype(np.float32)
    served = FORMATS[form].load_runner(result.path)(batch)
    predictor = colour_predictor(bundle)
    shown = np.array([r.probabilities for r in predictor.predict_batch(photos, tta=1)])
    raw = np.array([r.raw_probabilities for r in predictor.predict_batch(photos, tta=1)])
    np.testing.assert_allclose(served, shown, atol=1e-4)
    assert np.abs(served - raw).max() > 0.05
    assert [COLOURS[i] for i in served.argmax(axis=1)] == [expected_colour(p) for p in photos]


def test_a_broken_export_of_the_temperature_fails_parity(tmp_path, colour_photos):
    from carclf.bundle import load_bundle
    from carclf.export import QUANTIZATIONS, check_parity
    from carclf.images import load_rgb_array

    model = load_bundle(calibrated_colour_bundle(tmp_path / "models")).model
    batch = np.stack([load_rgb_array(p, size=32) for p in sorted(colour_photos.rglob("*.*"))]).astype(np.float32)
    forgot = check_parity(model, model.predict_on_batch, batch, QUANTIZATIONS["none"], temperature=2.5)
    assert not forgot.passed  # an artefact without the temperature gives the raw softmax


# --- Predict page ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.0, 0.99])
def test_predict_page_says_not_sure_with_the_alternatives(app_env, shared_data, threshold):
    car = "cars/sf_dl_car_classification_ostrebko/3/3201.jpg"
    make_bundle(app_env["models"], "tiny", ["3", "9"], ["VAZ-2110", "VAZ-21099"],
                extra_meta={"calibration": {"temperature": {"1": 1.5}}, "uncertain_below": threshold})
    at = open_page("predict.py")
    at.file_uploader(key="predict_upload").set_value(("3201.jpg", (shared_data / car).read_bytes(), "image/jpeg"))
    at.run()
    assert not at.exception and not at.error, texts(at.error)
    if threshold == 0.0:
        assert at.success and not any("Not sure" in text for text in texts(at.warning))
        return
    assert not at.success  # no verdict...
    warning = next(text for text in texts(at.warning) if "Not sure" in text)
    assert "VAZ-2110" in warning and "VAZ-21099" in warning and "99%" in warning  # ...the alternatives instead
    assert "Not a car" not in warning
    assert any("calibrated (temperature 1.50)" in text for text in texts(at.caption))
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)  # the top-k chart is still there
    assert set(chart["data"][0]["y"]) == {"VAZ-2110", "VAZ-21099"} and math.isclose(sum(chart["data"][0]["x"]), 1)


def test_the_skip_reported_is_the_one_for_the_views_averaged():
    """A run can keep its TTA fit and skip its no-TTA one (as a 10-photo run here did): each view count
    reports its own fit."""
    fits = {1: {"temperature": 1.0, "reason": "not calibrated: only 10 validation photos (< 20) and ..."},
            4: {"temperature": 0.47, "reason": "temperature 0.470 fitted on only 10 validation photos, kept"}}
    mixed = calibration.Calibration({1: 1.0, 4: 0.47}, fits)
    assert mixed.skipped_reason(1) == fits[1]["reason"] and mixed.temperature_for(1) == 1.0
    assert mixed.skipped_reason(4) is None and mixed.skipped_reason(3) is None  # 3 views use the TTA fit
    assert calibration.Calibration({1: 1.0}).skipped_reason(1) == "not calibrated"  # no reason stored
