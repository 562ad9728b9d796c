"""The review list behind the Health view: findings grouped per photo, worst first, with their decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from carclf.decisions import Decision
from carclf.doctor import DoctorReport, Finding
from carclf.doctor_review import describe_decision, page_bounds, pair_path, relabel_choices, review_items

CLASSES = ("audi", "bmw", "kia")
# As diagnose orders them: kind (leak, duplicate, ..., suspected_label), then score.
FINDINGS = [
    Finding("leak", "audi/a1.jpg", 1.0, "audi", other="t7.jpg", detail="the same pixels as t7.jpg"),
    Finding("duplicate", "bmw/b2.jpg", 1.0, "bmw", other="bmw/b1.jpg", detail="the same pixels as bmw/b1.jpg"),
    Finding("not_a_car", "kia/k3.jpg", 0.9, "kia", detail="ImageNet sees 'toaster'"),
    Finding("suspected_label", "bmw/b2.jpg", 0.8, "bmw", suggested_label="kia", detail="the data says kia"),
    Finding("suspected_label", "kia/k4.jpg", 0.6, "kia", suggested_label="audi", detail="the data says audi"),
]


@pytest.fixture
def report(tmp_path):
    return DoctorReport(root=tmp_path / "train", layout="folders", classes=CLASSES, n_images=20,
                        findings=list(FINDINGS), class_counts={c: 1 for c in CLASSES}, against=tmp_path / "test")


def test_findings_are_grouped_per_photo_in_report_order(report):
    items = review_items(report, {})
    assert [item.path for item in items] == ["audi/a1.jpg", "bmw/b2.jpg", "kia/k3.jpg", "kia/k4.jpg"]
    both = items[1]
    assert both.kinds == ["duplicate", "suspected_label"] and both.suggested_label == "kia"
    assert both.reason == "duplicate, suspected_label: the same pixels as bmw/b1.jpg"
    assert [item.path for item in review_items(report, {}, kind="suspected_label")] == ["bmw/b2.jpg", "kia/k4.jpg"]


def test_decisions_are_attached_and_can_hide_decided_photos(report):
    decisions = {"bmw/b2.jpg": Decision("bmw/b2.jpg", "relabel", "kia")}
    items = review_items(report, decisions)
    assert items[1].decision == decisions["bmw/b2.jpg"] and items[0].decision is None
    assert describe_decision(items[1].decision) == "relabelled to kia"
    assert "bmw/b2.jpg" not in [item.path for item in review_items(report, decisions, undecided_only=True)]


def test_a_leak_pair_lives_in_the_against_folder_a_duplicate_in_the_dataset(report):
    leak, duplicate = review_items(report, {})[:2]
    assert pair_path(report, leak.pair) == Path(report.against) / "t7.jpg"
    assert pair_path(report, duplicate.pair) == report.root / "bmw/b1.jpg"
    assert review_items(report, {})[2].pair is None


def test_relabel_offers_the_suggested_class_first_and_never_the_current_one(report):
    items = {item.path: item for item in review_items(report, {})}
    assert relabel_choices(CLASSES, items["kia/k4.jpg"]) == ["audi", "bmw"]
    assert relabel_choices(CLASSES, items["bmw/b2.jpg"]) == ["kia", "audi"]
    assert relabel_choices(CLASSES, items["kia/k3.jpg"]) == ["audi", "bmw"]


@pytest.mark.parametrize("n_items, page, expected", [
    (25, 1, (1, 0, 12)), (25, 3, (3, 24, 25)), (25, 9, (3, 24, 25)), (25, 0, (1, 0, 12)), (0, 1, (1, 0, 0)),
])
def test_pages_are_clamped_to_what_exists(n_items, page, expected):
    assert page_bounds(n_items, page, 12) == expected
