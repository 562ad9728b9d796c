"""The data doctor on real car photos with one injected case of every problem (see doctor_helpers)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from carclf.data import scan_dataset
from carclf.decisions import load_decisions, set_decision
from carclf.commands import doctor as doctor_command
from carclf.doctor import KINDS, apply_fixes, diagnose, fixes
from carclf.doctor_labels import check_labels
from carclf.doctor_map import map_points, project_2d, top_components
from carclf.embedding_cache import build_embedder

from conftest import REPO_ROOT
from doctor_helpers import make_injected_dataset


@pytest.fixture(scope="module")
def embedder():
    """One EfficientNet-Lite0 feature + ImageNet model for the module (the gate's own, at 224 px)."""
    return build_embedder()


@pytest.fixture(scope="module")
def case(shared_data, tmp_path_factory, embedder):
    data = make_injected_dataset(shared_data, tmp_path_factory.mktemp("doctor"))
    report = diagnose(data.train, against=data.test, embedder=embedder)
    return data, report


def pairs_of(report, kind):
    return {(f.path, f.other) for f in report.by_kind(kind)}


def test_every_injected_duplicate_and_leak_is_found_with_its_pair(case):
    data, report = case
    assert pairs_of(report, "duplicate") == {data.duplicate}
    assert pairs_of(report, "near_duplicate") == {data.near_duplicate}  # none among the distinct real photos
    assert pairs_of(report, "leak") == {data.leak_exact, data.leak_edited}
    assert report.n_against == 2


def test_non_car_photos_unreadable_files_and_odd_sizes_are_found(case):
    data, report = case
    assert {f.path for f in report.by_kind("not_a_car")} == set(data.not_a_car)
    assert "ImageNet sees 'acoustic guitar'" in next(f.detail for f in report.findings
                                                     if f.path.endswith("guitar.JPEG"))
    assert {f.path for f in report.by_kind("unreadable")} == {data.truncated, data.empty}
    assert {f.path for f in report.by_kind("outlier_size")} == {data.tiny, data.strip}


def test_the_flipped_label_ranks_first_with_its_true_class_suggested(case):
    data, report = case
    suspects = report.by_kind("suspected_label")
    assert suspects[0].path == data.flipped[0]
    assert suspects[0].suggested_label == data.flipped[1]
    assert [f.score for f in suspects] == sorted((f.score for f in suspects), reverse=True)
    assert len(suspects) < report.n_images // 4  # a ranked shortlist, not half the dataset


def test_label_check_tells_real_labels_from_shuffled_ones(case):
    """The agreement is what says how much a suspect means: real labels agree far more than shuffled ones,
    and shuffled labels are reported as too weak to judge."""
    data, report = case
    check = report.label_check
    skipped = {f.path for f in report.findings if f.kind in ("unreadable", "not_a_car")}
    rows = [i for i, path in enumerate(report.paths) if path not in skipped]
    assert check["photos"] == len(rows) and 0.0 <= check["agreement"] <= 1.0
    features, labels = report.features[rows], np.array(report.labels)[rows]
    real = check_labels(features, labels, len(report.classes))
    assert real.agreement == check["agreement"] and real.weak == check["weak"]
    shuffled = check_labels(features, np.random.default_rng(0).permutation(labels), len(report.classes))
    assert shuffled.agreement < real.agreement - 0.2
    assert shuffled.weak and len(shuffled.suspects) > len(real.suspects)
    assert check_labels(features[:4], labels[:4], len(report.classes)).agreement is None  # too few to judge


def test_a_weak_label_check_is_said_in_the_cli_and_the_json(case):
    _, report = case
    weak = dataclasses.replace(report, label_check={**report.label_check, "agreement": 0.41, "weak": True})
    assert "41%" in weak.label_warning and "hard photos of the right class" in weak.label_warning
    assert "label check: " + weak.label_warning in doctor_command.summary(weak)
    assert json.loads(weak.to_json())["label_check"]["weak"] is True
    strong = dataclasses.replace(report, label_check={**report.label_check, "agreement": 0.95, "weak": False})
    assert strong.label_warning is None and "label check" not in doctor_command.summary(strong)


def test_json_report_lists_every_kind_and_the_class_counts(case):
    data, report = case
    data_json = json.loads(report.to_json())
    assert list(data_json["summary"]) == list(KINDS)
    assert set(data_json["label_check"]) == {"photos", "agreement", "weak", "weak_below"}
    assert data_json["n_images"] == report.n_images == len(scan_dataset(data.train).items)
    assert sum(data_json["summary"].values()) == len(data_json["findings"])
    leak = next(f for f in data_json["findings"] if f["kind"] == "leak")
    assert {"kind", "path", "score", "other", "detail", "fix"} <= set(leak)
    assert data_json["class_counts"]["bmw_x5"] == len(list((data.train / "bmw_x5").iterdir()))


def test_fixes_become_decisions_that_scan_dataset_honours(case, tmp_path):
    data, report = case
    before = scan_dataset(data.train)
    relabel = {d.path: d for d in fixes(report, label_fix="relabel", label_max_confidence=None)}
    assert relabel[data.flipped[0]].action == "relabel" and relabel[data.flipped[0]].label == "qashqai"
    assert len([d for d in relabel.values() if d.action == "relabel"]) == len(report.by_kind("suspected_label"))
    planned = {d.path: d for d in fixes(report, label_fix="relabel")}  # only the confident suspects
    assert planned[data.flipped[0]].action == "relabel"
    assert len([d for d in planned.values() if d.action == "relabel"]) < len(report.by_kind("suspected_label"))
    assert planned[data.duplicate[0]].action == "exclude" and data.duplicate[1] not in planned
    assert data.tiny not in planned  # size outliers need a person
    try:
        assert apply_fixes(report, label_fix="relabel") == len(planned)
        assert apply_fixes(report) == 0  # already decided: nothing added twice
        after = scan_dataset(data.train)
        excluded = {item.path.relative_to(after.root).as_posix() for item in after.excluded}
        assert {data.duplicate[0], data.near_duplicate[0], data.leak_exact[0], *data.not_a_car} <= excluded
        assert data.empty in excluded  # an unreadable photo is excluded too (it was never usable)
        assert len(after.items) == len(before.items) - len(excluded - {data.empty})
        relabelled = {path.relative_to(after.root).as_posix(): after.classes[new]
                      for path, _, new in after.relabelled}
        assert relabelled[data.flipped[0]] == "qashqai"
    finally:
        (data.train / "carclf-decisions.csv").unlink(missing_ok=True)


def test_second_run_reads_the_cache_and_keep_hides_a_finding(case, embedder):
    data, report = case
    set_decision(data.train, data.tiny, "keep", reason="reviewed")
    try:
        again = diagnose(data.train, against=data.test, embedder=embedder)
    finally:
        (data.train / "carclf-decisions.csv").unlink()
    assert again.computed == 0
    assert (data.train / ".carclf-cache").is_dir()
    assert [f for f in again.findings if f.path != data.tiny] == [f for f in report.findings if f.path != data.tiny]
    assert data.tiny not in {f.path for f in again.findings} and again.reviewed == 1


def test_map_places_every_readable_photo(case):
    data, report = case
    points = map_points(report)
    assert len(points) == report.n_images - 1  # the truncated photo has no features
    assert all(np.isfinite([p["x"], p["y"]]).all() for p in points)
    cat = next(p for p in points if p["path"] == data.not_a_car[0])
    assert cat["kinds"] == ["not_a_car"]
    coords = project_2d(report.features)
    assert coords.shape == (report.n_images, 2)
    assert np.allclose(project_2d(report.features), coords)  # deterministic
    # the iterated axes are the principal axes a full SVD finds, on these real features
    rows = report.features[np.abs(report.features).sum(axis=1) > 0]
    centred = rows - rows.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(np.abs(np.sum(top_components(centred, 2) * vt[:2], axis=1)), 1.0, atol=1e-4)


def test_cli_prints_json_from_the_cache_and_applies_fixes(case, tmp_path):
    data, report = case
    command = [sys.executable, "-m", "carclf", "doctor", str(data.train), "--against", str(data.test)]
    result = subprocess.run(command + ["--json", "--no-progress", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["computed"] == 0 and printed["summary"] == report.summary
    assert json.loads((tmp_path / "out" / "doctor.json").read_text()) == printed
    rows = (tmp_path / "out" / "findings.csv").read_text().splitlines()
    assert rows[0].startswith("kind,path,score") and len(rows) == 1 + len(report.findings)
    applied = subprocess.run(command + ["--apply", "--apply-kinds", "leak", "--no-progress"],
                             capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert applied.returncode == 0, applied.stderr
    assert "leak (2, worst first)" in applied.stdout
    assert set(load_decisions(data.train)) == {data.leak_exact[0], data.leak_edited[0]}
    cleared = subprocess.run([sys.executable, "-m", "carclf", "doctor", str(data.train), "--clear-decisions",
                              "--no-progress", "--json"], capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)
    assert cleared.returncode == 0 and "removed 2 decision(s)" in cleared.stderr
    assert load_decisions(data.train) == {}


def test_cli_refuses_a_missing_folder_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "carclf", "doctor", str(tmp_path / "nope")],
                            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "no such folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_real_near_duplicates_across_sources_are_paired_and_look_alikes_are_not(shared_data, embedder):
    """Two brand datasets share press photos (one cropped by a quarter); two studio BMWs only look alike."""
    from carclf.doctor_dupes import find_pairs
    from carclf.embedding_cache import embed_files

    cars = shared_data / "cars"
    photos = [cars / name for name in (
        "mfismail_car_brands_3/mercedes/train_49.jpg", "vidhyagupta_car_brands_5/mercedes/train_35.jpg",
        "mfismail_car_brands_3/mercedes/test_1.jpeg", "vidhyagupta_car_brands_5/mercedes/train_1.jpg",
        "vidhyagupta_car_brands_5/bmw/train_4.jpg", "vidhyagupta_car_brands_5/bmw/train_63.jpg")]
    emb = embed_files(photos, None, embedder=embedder)
    assert float(emb.features[4] @ emb.features[5]) > 0.8  # close in feature space: a hard negative
    pairs = find_pairs(emb.features, emb.thumbs, emb.pixel_hashes)
    assert {(p.i, p.j, p.kind) for p in pairs} == {(0, 1, "near_duplicate"), (2, 3, "near_duplicate")}
