"""The Data page's Health view in a real browser (`streamlit run app.py` + Debian chromium): check a small real
dataset with an injected duplicate, exclude the duplicate with its button, and see the decisions file and the
counts change; then click a point of the dataset map and see that photo open."""

from __future__ import annotations

import shutil

import pytest

from browser_helpers import browser_page, go_to, streamlit_server, wait_idle
from carclf.decisions import load_decisions

pytestmark = pytest.mark.browser

SOURCE = "cars/manzhura_ru_5models"
CLASSES = ("bmw_x5", "land_cruiser", "qashqai")
PER_CLASS = 4
DUPLICATE = "land_cruiser/zz_copy.jpg"
# Milliseconds for the first health check: the server builds the feature model and reads every photo.
CHECK_TIMEOUT_MS = 240_000


def _dataset(shared_data, root):
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for photo in sorted((shared_data / SOURCE / name).iterdir())[:PER_CLASS]:
            shutil.copy(photo, root / name / photo.name)
    shutil.copy(sorted((root / "land_cruiser").iterdir())[0], root / DUPLICATE)
    return root


def _metric_tile(page, label: str):
    return page.locator('[data-testid="stMetric"]').filter(has=page.get_by_text(label, exact=True))


def _metric(page, label: str) -> str:
    return _metric_tile(page, label).locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_exclude_a_duplicate_from_the_page_and_open_a_photo_from_the_map(shared_data, tmp_path):
    data = _dataset(shared_data, tmp_path / "cars")
    folders = {name: tmp_path / name for name in ("home", "models", "runs", "augment")}
    for folder in folders.values():
        folder.mkdir()
    env = {"CARCLF_MODELS_DIR": str(folders["models"]), "CARCLF_RUNS_DIR": str(folders["runs"]),
           "CARCLF_AUGMENT_DIR": str(folders["augment"])}
    with streamlit_server(folders["home"], env, tmp_path / "server.log") as (url, _), \
            browser_page(folders["home"]) as page:
        page.goto(url)
        go_to(page, "Data", timeout_ms=CHECK_TIMEOUT_MS)
        page.get_by_role("textbox", name="Dataset folder").fill(str(data))
        page.keyboard.press("Enter")
        wait_idle(page)
        photos = len(CLASSES) * PER_CLASS + 1
        assert _metric(page, "Photos") == str(photos)

        page.get_by_role("button", name="Check health").click()
        page.get_by_role("heading", name="Review and fix").wait_for(timeout=CHECK_TIMEOUT_MS)
        wait_idle(page)
        assert _metric(page, "Duplicates") == "1"

        # The grid lists the worst first: the exact copy. Exclude it with its button.
        first_card = page.locator("code", has_text=DUPLICATE).first
        first_card.wait_for()
        page.get_by_role("button", name="Exclude").first.click()
        page.get_by_text("Decided: excluded").wait_for()
        wait_idle(page)
        assert load_decisions(data)[DUPLICATE].action == "exclude"
        assert (data / DUPLICATE).is_file()
        assert (_metric(page, "Photos"), _metric(page, "On disk")) == (str(photos - 1), str(photos))
        assert _metric(page, "Excluded") == "1"

        # A click on a point of the map opens that photo with its own buttons (one more "Keep").
        keeps = page.get_by_role("button", name="Keep").count()
        point = page.locator('[data-testid="stPlotlyChart"] .scatterlayer .point').first
        box = point.bounding_box()
        x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        page.mouse.move(x - 5, y - 5)
        page.mouse.move(x, y, steps=5)  # plotly needs the hover before the click
        page.mouse.click(x, y)
        page.wait_for_function(f"() => [...document.querySelectorAll('button')]"
                               f".filter(b => b.innerText.includes('Keep')).length > {keeps}", timeout=60_000)
        wait_idle(page)
        # The first point is a photo without findings (unflagged points come first): it opens too (it once
        # raised an IndexError here).
        page.get_by_text("No finding about this photo.").wait_for()
        assert page.get_by_role("button", name="Keep").count() > keeps

        # On a phone (390 px) the numbers wrap several to a line and a card's Keep and Exclude sit side by side;
        # st.columns stacked them one per line (eight findings counts filled the screen).
        page.set_viewport_size({"width": 390, "height": 900})
        page.wait_for_timeout(1500)
        wait_idle(page)
        leaks, duplicates = (_metric_tile(page, label).bounding_box() for label in ("Leaks", "Duplicates"))
        assert leaks["y"] == duplicates["y"] and duplicates["x"] > leaks["x"]
        keep = page.get_by_role("button", name="Keep").last.bounding_box()
        exclude = page.get_by_role("button", name="Exclude").last.bounding_box()
        assert keep["y"] == exclude["y"] and exclude["x"] > keep["x"]
