"""``python -m carclf evaluate|submit|export``: JSON output, files written, user mistakes as one line."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from carclf.cli import main
from carclf.export import PARITY_FILE
from inference_helpers import COLOURS, PHOTOS, copy_photo, copy_photos, expected_colour, save_colour_bundle

REPO_ROOT = Path(__file__).resolve().parents[1]
# Seconds the real `python -m carclf` may take: importing TensorFlow and building the gate on 2 shared cores.
CLI_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return save_colour_bundle(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, shared_data):
    root = copy_photos(shared_data, {colour: PHOTOS[colour][:2] for colour in COLOURS}, tmp_path_factory.mktemp("val"))
    copy_photo(shared_data, PHOTOS["green"][2], root / "red")  # one deliberate mistake
    return root


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, "-m", "carclf", *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=CLI_TIMEOUT_S)


def assert_one_line_error(code: int, stderr: str, *fragments: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_evaluate_json_is_one_parseable_object(bundle, data_dir):
    done = run_cli("evaluate", str(bundle), "--data", str(data_dir), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)  # the progress bar went to stderr, stdout is only the JSON
    assert {"accuracy", "n_images", "per_class", "confusion", "misclassified", "unreadable"} <= set(report)
    truth = {p.name: (p.parent.name, expected_colour(p)) for p in data_dir.rglob("*") if p.is_file()}
    right = sum(true == predicted for true, predicted in truth.values())
    assert report["n_images"] == len(truth) == 7
    assert report["accuracy"] == pytest.approx(right / len(truth))
    assert set(report["per_class"]) == set(COLOURS) and report["per_class"]["green"]["support"] == 2
    assert sum(map(sum, report["confusion"])) == 7


def test_evaluate_summary_and_out_folder(bundle, data_dir, tmp_path, capsys):
    assert main(["evaluate", str(bundle), "--data", str(data_dir), "--out", str(tmp_path / "eval"),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "accuracy 0.8571 on 7 photos" in text and "red -> green: 1" in text
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {
        "report.json", "per_class.csv", "confusion.csv", "misclassified.csv"}


def test_submit_writes_the_csv(bundle, data_dir, tmp_path, capsys):
    test_dir = tmp_path / "test_upload"
    for photo in sorted(data_dir.rglob("*.*"))[:3]:
        copy_photo(photo.parent, photo.name, test_dir)
    out = tmp_path / "submission.csv"
    assert main(["submit", str(bundle), "--test-dir", str(test_dir), "--out", str(out), "--no-progress",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["Id", "Category"] and result["n_rows"] == len(rows) - 1 == 3
    assert all(category == expected_colour(test_dir / image_id) for image_id, category in rows[1:])

    # Written again: an existing file is replaced only with --overwrite (a mistyped --out once replaced a
    # model's model.keras, a test photo and the sample file).
    code = main(["submit", str(bundle), "--test-dir", str(test_dir), "--out", str(out), "--no-progress"])
    assert_one_line_error(code, capsys.readouterr().err, "already exists", "--overwrite")
    photo = sorted(test_dir.iterdir())[0]
    before = photo.read_bytes()
    code = main(["submit", str(bundle), "--test-dir", str(test_dir), "--out", str(photo), "--no-progress"])
    assert_one_line_error(code, capsys.readouterr().err, "already exists")
    assert photo.read_bytes() == before
    assert main(["submit", str(bundle), "--test-dir", str(test_dir), "--out", str(out), "--overwrite",
                 "--no-progress"]) == 0


def test_pack_commands_never_replace_an_existing_file(bundle, tmp_path, capsys):
    model_file = Path(bundle) / "model.keras"
    before = model_file.read_bytes()
    code = main(["bundle", "pack", str(bundle), str(model_file)])
    assert_one_line_error(code, capsys.readouterr().err, "already exists", "--overwrite")
    assert model_file.read_bytes() == before
    code = main(["bundle", "pack", str(bundle), str(tmp_path)])
    assert_one_line_error(code, capsys.readouterr().err, "is a folder")
    out = tmp_path / "b.zip"
    assert main(["bundle", "pack", str(bundle), str(out)]) == 0
    assert main(["bundle", "pack", str(bundle), str(out), "--overwrite"]) == 0


def test_submit_missing_sample_ids_is_one_line(bundle, data_dir, tmp_path, capsys):
    sample = tmp_path / "sample.csv"
    sample.write_text("Id,Category\nnot_there.jpg,0\n")
    code = main(["submit", str(bundle), "--test-dir", str(data_dir / "red"), "--out", str(tmp_path / "s.csv"),
                 "--sample", str(sample), "--no-progress"])
    assert_one_line_error(code, capsys.readouterr().err, "not_there.jpg", "--allow-missing")
    assert not (tmp_path / "s.csv").exists()


def test_export_reports_parity(bundle, data_dir, tmp_path, capsys):
    out = tmp_path / "m.tflite"
    assert main(["export", str(bundle), "--format", "tflite", "--quantize", "int8", "--out", str(out),
                 "--parity-images", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert "top-1 agreement 100%" in text and "OK" in text
    assert json.loads((tmp_path / PARITY_FILE).read_text())["parity"]["n_images"] == 7


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["evaluate", "{missing}", "--data", "{data}"], ["no such bundle folder"]),
        (["evaluate", "{bundle}", "--data", "{tmp}/nowhere"], ["no such folder"]),
        (["evaluate", "{bundle}", "--data", "{odd}"], ["does not know", "purple"]),
        (["export", "{bundle}", "--format", "savedmodel", "--quantize", "int8", "--out", "{tmp}/x"], ["TFLite only"]),
        (["submit", "{bundle}", "--test-dir", "{tmp}/nowhere", "--out", "{tmp}/s.csv"], ["no such test folder"]),
        (["evaluate", "{bundle}", "--data", "{data}", "--batch-size", "100000000"], ["batch size must be a whole number from 1 to"]),
        (["submit", "{bundle}", "--test-dir", "{data}/red", "--out", "{tmp}/s.csv", "--batch-size", "0"],
         ["batch size must be a whole number from 1 to"]),
    ],
)
def test_user_mistakes_are_one_line_errors(bundle, data_dir, tmp_path, shared_data, capsys, argv, fragments):
    odd = tmp_path / "odd"
    copy_photo(shared_data, PHOTOS["red"][0], odd / "red")
    copy_photo(shared_data, PHOTOS["red"][1], odd / "purple")
    values = {"bundle": bundle, "data": data_dir, "tmp": tmp_path, "odd": odd, "missing": tmp_path / "no_model"}
    code = main([arg.format(**values) for arg in argv] + (["--no-progress"] if argv[0] != "export" else []))
    assert_one_line_error(code, capsys.readouterr().err, *fragments)


def test_real_entry_point_error_exit_code(tmp_path):
    done = run_cli("submit", str(tmp_path / "no_model"), "--test-dir", str(tmp_path), "--out", str(tmp_path / "s.csv"))
    # TensorFlow's C++ runtime may print its own start-up lines first (absl/oneDNN notices, not ours):
    # carclf's part is exactly one "error:" line, last, and no traceback.
    ours = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode == 2 and len(ours) == 1 and done.stderr.rstrip().endswith(ours[0])
    assert "no_model" in ours[0] and "Traceback" not in done.stderr
