"""Every button of every page, pressed on a freshly opened page, and each button that press brings up (a
confirmation, a review grid) pressed next, as the owner of a local app, a visitor of a public one and its
logged-in owner: no press may end in a traceback.

The world holds what makes the pages draw their buttons: a trained bundle (tiny, real), a workspace dataset of
real photos, a finished run imported from an archive. This is the permanent, cheap form of the dashboard fuzz
that found three tracebacks (a strip photo, a 5,000-character path, a map click): a new button that raises
fails here. Buttons that start a real training in the background are left out (the Train tests cover them).
"""

from __future__ import annotations

import shutil

import pytest
from streamlit.testing.v1 import AppTest

from app_helpers import APP, RUN_TIMEOUT_S, app_env, make_bundle  # noqa: F401  (app_env is a fixture)
from run_archive_helpers import packed_run

PAGES = ["predict.py", "augment_lab.py", "train.py", "evaluate.py", "data.py"]
PASSWORD = "correct horse battery staple"
BRANDS = "cars/vidhyagupta_car_brands_5"
DATASET = "brands"
# Would start a training process: pressed by the Train tests with tiny settings, not here with the preset's.
STARTS_TRAINING = {"Launch training", "Resume"}
# Buttons a press brings up that are pressed next (the first few: a review grid has three per photo).
MAX_FOLLOW_UPS = 3


@pytest.fixture
def world(app_env, shared_data, tmp_path, monkeypatch):
    from carclf.run_archive import import_run

    datasets = tmp_path / "datasets"
    for brand in ("audi", "bmw"):
        (datasets / DATASET / brand).mkdir(parents=True)
        for photo in sorted((shared_data / BRANDS / brand).iterdir())[:3]:
            shutil.copy(photo, datasets / DATASET / brand / photo.name)
    shutil.copy(photo, datasets / DATASET / "bmw" / "posted_twice.jpg")  # a finding: the review grid's buttons
    monkeypatch.setenv("CARCLF_DATASETS_DIR", str(datasets))
    monkeypatch.setenv("CARCLF_OWNER_PASSWORD", PASSWORD)
    make_bundle(app_env["models"], "tiny", ["audi", "bmw"], ["Audi", "BMW"])
    _, archive = packed_run(tmp_path / "elsewhere")
    import_run(archive, app_env["runs"])
    return {**app_env, "dataset": datasets / DATASET}


def _open(script: str, role: str) -> AppTest:
    from carclf.ui.dataset_picker import LAST_DATASET_KEY

    at = AppTest.from_file(str(APP), default_timeout=RUN_TIMEOUT_S)
    at.session_state[LAST_DATASET_KEY] = DATASET  # every page starts on the workspace dataset
    at.switch_page(f"pages/{script}")
    at.run()
    if role == "owner":
        at.text_input(key="owner_password").input(PASSWORD)
        next(b for b in at.button if b.label == "Log in").click().run()
    assert not at.exception, at.exception
    return at


def _buttons(at: AppTest) -> list[tuple[str | None, str]]:
    """The enabled buttons, one sample photo of each kind (the gallery's ten differ only by photo)."""
    found, samples = [], set()
    for button in at.button:
        if button.disabled or button.label in STARTS_TRAINING:
            continue
        if (button.key or "").startswith("predict_sample_"):
            kind = button.label.split()[0]  # "car ..." or "noncar ..."
            if kind in samples:
                continue
            samples.add(kind)
        found.append((button.key, button.label))
    # deleting last: what is deleted is gone for the presses after it
    return sorted(found, key=lambda button: button[1].startswith(("Delete", "Yes, delete")))


def _press(world: dict, script: str, role: str, presses: list) -> AppTest:
    """A freshly opened page with ``presses`` (key, label) pressed in turn; fails on any traceback. The review
    decisions an earlier press made are forgotten first (its buttons would be gone)."""
    from carclf.decisions import DECISIONS_FILE

    (world["dataset"] / DECISIONS_FILE).unlink(missing_ok=True)
    at = _open(script, role)
    for key, label in presses:
        matches = [b for b in at.button if (b.key, b.label) == (key, label)]
        assert matches, f"{label!r} is not on the page after {presses}"
        matches[0].click().run()
        assert not at.exception, f"{script} as {role}: pressing {[p[1] for p in presses]} raised {at.exception}"
    return at


@pytest.mark.parametrize("script", PAGES)
@pytest.mark.parametrize("role, mode", [("local", "local"), ("visitor", "public"), ("owner", "public")])
def test_every_button_and_what_it_brings_up(world, monkeypatch, script, role, mode):
    monkeypatch.setenv("CARCLF_MODE", mode)
    buttons = _buttons(_open(script, role))
    assert buttons, "the page drew no button to press"
    for first in buttons:
        after = _buttons(_press(world, script, role, [first]))
        for second in [b for b in after if b not in buttons][:MAX_FOLLOW_UPS]:
            _press(world, script, role, [first, second])
