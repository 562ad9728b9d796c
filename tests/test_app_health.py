"""The Health view of the Data page on real photos: a small car dataset with an injected exact duplicate and a
non-car photo. The doctor runs for real (EfficientNet-Lite0 features); the module warms the dataset's embedding
cache once and every test works on its own copy (the cache travels with it), so the page never builds a model."""

from __future__ import annotations

import json
import shutil

import pytest

from app_helpers import app_env, open_page, texts  # noqa: F401  (app_env is a fixture)
from carclf.decisions import DECISIONS_FILE, load_decisions
from carclf.ui import health
from test_app_public import PASSWORD, button, login, public_env  # noqa: F401  (public_env is a fixture)

SOURCE = "cars/manzhura_ru_5models"
CLASSES = ("bmw_x5", "land_cruiser", "qashqai")
PER_CLASS = 5
DUPLICATE = "land_cruiser/zz_copy.jpg"  # an exact copy of the class's first photo
NON_CAR = "qashqai/cat.jpg"
EMPTY = "bmw_x5/empty.jpg"  # a 0-byte "photo": unreadable


@pytest.fixture(scope="module")
def warm_dataset(shared_data, tmp_path_factory):
    """3 car models x 5 real photos + a byte copy of one + a cat + an empty file, with the doctor's embedding
    cache filled."""
    from carclf.doctor import diagnose

    root = tmp_path_factory.mktemp("health") / "cars"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for photo in sorted((shared_data / SOURCE / name).iterdir())[:PER_CLASS]:
            shutil.copy(photo, root / name / photo.name)
    shutil.copy(sorted((root / "land_cruiser").iterdir())[0], root / DUPLICATE)
    shutil.copy(shared_data / "noncars" / "caffe_cat.jpg", root / NON_CAR)
    (root / EMPTY).write_bytes(b"")
    diagnose(root)  # fills root/.carclf-cache
    return root


@pytest.fixture
def dataset(warm_dataset, tmp_path):
    return shutil.copytree(warm_dataset, tmp_path / "cars")


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def card_buttons(at, path: str) -> dict[str, object]:
    """The review grid's buttons of one photo, by label."""
    prefix = f"health_g_{path}_"
    return {b.label: b for b in at.button if b.key and b.key.startswith(prefix)}


def checked(dataset):
    at = open_page("data.py")
    at.text_input(key="data_folder").set_value(str(dataset)).run()
    button(at, "Check health").click().run()
    assert not at.exception and not at.error, (at.exception, texts(at.error))
    return at


def test_health_check_lists_the_injected_duplicate_and_non_car(app_env, dataset):
    at = checked(dataset)
    found = metrics(at)
    assert found["Duplicates"] == "1" and found["Not a car"] == "1"
    assert found["Leaks"] == "0" and found["Unreadable"] == "1"
    cards = [m.value for m in at.markdown if m.value.startswith("`")]
    assert cards[:3] == [f"`{EMPTY}` · class **bmw_x5**", f"`{DUPLICATE}` · class **land_cruiser**",
                         f"`{NON_CAR}` · class **qashqai**"]  # worst first
    assert any("the file is empty" in c.value for c in at.caption)  # instead of its picture
    assert any("the same pixels as land_cruiser/" in c.value for c in at.caption)
    assert set(card_buttons(at, DUPLICATE)) == {"Keep", "Exclude", "Relabel"}
    # The map: one trace per class, every photo a point named by its path, the flagged ones as diamonds.
    spec = json.loads(at.get("plotly_chart")[-1].proto.spec)
    traces = {t["name"]: t for t in spec["data"]}
    assert set(traces) == set(CLASSES)
    assert sum(len(t["x"]) for t in traces.values()) == len(CLASSES) * PER_CLASS + 2
    symbols = {row[0]: symbol for t in traces.values() for row, symbol in zip(t["customdata"], t["marker"]["symbol"])}
    assert {path for path, symbol in symbols.items() if symbol == "diamond"} == {DUPLICATE, NON_CAR}


def test_a_weak_label_check_is_explained_above_the_findings(app_env, dataset, monkeypatch):
    from carclf import doctor_labels

    monkeypatch.setattr(doctor_labels, "WEAK_AGREEMENT", 1.01)  # any agreement is too weak to judge labels by
    at = checked(dataset)
    notes = [t for t in texts(at.info) if "labels out of fold" in t]
    assert len(notes) == 1 and "16 labels" in notes[0] and "hard photos of the right class" in notes[0]


def test_keep_exclude_relabel_write_the_decisions_file_and_change_the_counts(app_env, dataset):
    at = checked(dataset)
    photos = int(metrics(at)["Photos"])
    assert "Excluded" not in metrics(at)  # no decisions file yet

    card_buttons(at, DUPLICATE)["Exclude"].click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert load_decisions(dataset)[DUPLICATE].action == "exclude"
    shown = metrics(at)
    assert (shown["Photos"], shown["Used"], shown["On disk"]) == (str(photos - 1), str(photos - 1), str(photos))
    assert shown["Excluded"] == "1" and shown["Relabelled"] == "0"
    assert "Decided: excluded" in texts(at.info)
    assert (dataset / DUPLICATE).is_file()  # nothing moved or deleted

    at.selectbox(key=f"health_g_{NON_CAR}_to").set_value("bmw_x5")
    card_buttons(at, NON_CAR)["Relabel"].click().run()
    decision = load_decisions(dataset)[NON_CAR]
    assert (decision.action, decision.label) == ("relabel", "bmw_x5")
    assert "not_a_car" in decision.reason
    assert metrics(at)["Relabelled"] == "1"

    card_buttons(at, NON_CAR)["Undo"].click().run()  # undo = forget that one decision
    assert NON_CAR not in load_decisions(dataset)
    assert metrics(at)["Relabelled"] == "0"
    card_buttons(at, NON_CAR)["Keep"].click().run()
    assert load_decisions(dataset)[NON_CAR].action == "keep"
    assert metrics(at)["Used"] == str(photos - 1)  # a kept photo still counts

    at.toggle(key="health_hide_decided").set_value(True).run()
    assert not card_buttons(at, DUPLICATE) and not card_buttons(at, NON_CAR)

    button(at, "Clear all decisions").click().run()
    assert (dataset / DECISIONS_FILE).is_file()  # asks first
    button(at, "Yes, clear them").click().run()
    assert not at.exception
    assert not (dataset / DECISIONS_FILE).exists()
    assert metrics(at)["Photos"] == str(photos) and "Excluded" not in metrics(at)


def test_a_photo_opened_from_the_map_shows_its_findings_and_buttons(app_env, dataset):
    at = checked(dataset)
    points = [{"curve_number": 1, "point_index": 5, "x": 0.1, "y": -0.2, "customdata": [DUPLICATE]}]
    assert health.clicked_path(points) == DUPLICATE  # what a click on the map hands to open_photo
    assert health.clicked_path([{"x": 1, "y": 2}]) is None
    at.session_state[health.OPEN_KEY] = DUPLICATE
    at.run()
    opened = {b.label for b in at.button if b.key and b.key.startswith(f"health_m_{DUPLICATE}_")}
    assert opened == {"Keep", "Exclude", "Relabel"}
    next(b for b in at.button if b.key == f"health_m_{DUPLICATE}_exclude").click().run()
    assert load_decisions(dataset)[DUPLICATE].action == "exclude"


def test_a_photo_without_findings_opened_from_the_map_can_be_decided_too(app_env, dataset):
    at = checked(dataset)
    report = next(iter(at.session_state[health.REPORTS_KEY].values()))["report"]
    flagged = {finding.path for finding in report.findings}
    clean = next(p for p in (f"{c}/{f.name}" for c in CLASSES for f in sorted((dataset / c).iterdir()))
                 if p not in flagged)
    at.session_state[health.OPEN_KEY] = clean
    at.run()
    assert not at.exception
    assert "No finding about this photo." in [c.value for c in at.caption]
    next(b for b in at.button if b.key == f"health_m_{clean}_keep").click().run()
    assert not at.exception
    decision = load_decisions(dataset)[clean]
    assert (decision.action, decision.reason) == ("keep", "reviewed (chosen on the map)")


def test_the_grid_pages_through_the_flagged_photos_worst_first(app_env, dataset, monkeypatch):
    monkeypatch.setattr(health, "PER_PAGE", 1)  # the real grid holds 12 a page; 3 findings fill 3 pages of 1
    at = checked(dataset)
    shown = lambda: [m.value for m in at.markdown if m.value.startswith("`")]  # noqa: E731
    assert shown() == [f"`{EMPTY}` · class **bmw_x5**"]
    at.number_input(key=health.PAGE_KEY).set_value(3).run()
    assert shown() == [f"`{NON_CAR}` · class **qashqai**"]
    at.selectbox(key="health_kind").set_value("duplicate").run()  # fewer pages: back within range
    assert not at.exception and shown() == [f"`{DUPLICATE}` · class **land_cruiser**"]


def test_bad_input_is_one_line(app_env, dataset, tmp_path):
    at = open_page("data.py")
    at.text_input(key="data_folder").set_value(str(dataset)).run()
    at.text_input(key="health_against").set_value(str(tmp_path / "no-such-test-folder")).run()
    assert "not a folder" in at.error[0].value  # the box says so; checking without it still works
    empty = tmp_path / "empty-test"
    empty.mkdir()
    at.text_input(key="health_against").set_value(str(empty)).run()
    button(at, "Check health").click().run()
    assert not at.exception
    assert len(at.error) == 1 and "no image files" in at.error[0].value and "\n" not in at.error[0].value
    (dataset / DECISIONS_FILE).write_text("path,action,label\nqashqai/cat.jpg,delete,\n")  # a hand-edited typo
    button(at, "Rescan").click().run()
    assert not at.exception
    assert "unknown decision 'delete'" in at.error[0].value
    button(at, "Clear all decisions").click().run()
    button(at, "Yes, clear them").click().run()
    assert not at.exception and not at.error, texts(at.error)
    assert metrics(at)["Photos"] == str(len(CLASSES) * PER_CLASS + 2)


def test_public_visitors_see_the_findings_but_only_the_owner_fixes(public_env, warm_dataset, tmp_path):
    shutil.copytree(warm_dataset, public_env["datasets"] / "cars")
    held_out = sorted((warm_dataset / "bmw_x5").glob("x*"))[0]  # a test photo that also sits in the training set
    test_photos = public_env["datasets"] / "test-photos"
    shutil.copytree(warm_dataset / ".carclf-cache", test_photos / ".carclf-cache")  # its features are known
    shutil.copy(held_out, test_photos / "held_out.jpg")
    visitor = open_page("data.py")
    visitor.selectbox(key="data_folder_dataset").set_value("cars").run()
    against = visitor.selectbox(key="health_against_dataset")
    assert against.options == ["test-photos"]  # workspace datasets, not this one, never a server path
    against.set_value("test-photos").run()
    button(visitor, "Check health").click().run()
    assert not visitor.exception and not visitor.error, texts(visitor.error)
    assert metrics(visitor)["Duplicates"] == "1" and metrics(visitor)["Leaks"] == "1"
    assert f"`bmw_x5/{held_out.name}` · class **bmw_x5**" in [m.value for m in visitor.markdown]
    assert "in the test folder" in [img.proto.imgs[0].caption for img in visitor.image]
    assert not [b for b in visitor.button if b.key and b.key.startswith("health_g_")]
    assert any("Only the owner" in c.value for c in visitor.caption)
    assert "Clear all decisions" not in [b.label for b in visitor.button]
    assert [t.key for t in visitor.text_input] == ["owner_password"]  # no server path box for the against folder
    assert str(tmp_path) not in json.dumps([c.value for c in list(visitor.caption) + list(visitor.markdown)])

    owner = login(open_page("data.py"), PASSWORD)
    owner.selectbox(key="data_folder_dataset").set_value("cars").run()
    button(owner, "Check health").click().run()
    card_buttons(owner, DUPLICATE)["Exclude"].click().run()
    assert load_decisions(public_env["datasets"] / "cars")[DUPLICATE].action == "exclude"
    assert metrics(owner)["Excluded"] == "1"


def test_progress_covers_the_doctor_stages_in_order():
    stages = list(health.STAGES)
    assert stages == ["checking files", "embedding", "comparing", "labels"]
    values = [health.progress_fraction(stage, done, 4) for stage in stages for done in range(5)]
    assert values == sorted(values) and values[0] == 0.0 and values[-1] == 1.0
    assert health.progress_fraction("embedding", 0, 0) == health.STAGES["embedding"][1]  # all cached: done
