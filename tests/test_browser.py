"""The dashboard in a real browser: `streamlit run app.py` driven by Debian chromium through Playwright.

One server and one browser for the whole scenario (each costs seconds on 2 shared cores): predict a non-car
and a car photo, then both as a table whose row opens one in detail, move a slider in the Augmentation lab, launch a tiny training run and watch its curve
appear, reload the page (runs live on disk), then pick the new model in the sidebar and check the choice
survives page changes.
"""

from __future__ import annotations

import shutil

import pytest

from browser_helpers import browser_page, dashboard_server, go_to, launch_tiny_run, wait_idle

pytestmark = pytest.mark.browser

CAR = "cars/sf_dl_car_classification_ostrebko/0/3076.jpg"
NON_CAR = "noncars/caffe_cat.jpg"
BRANDS = "cars/vidhyagupta_car_brands_5"
# Milliseconds to wait for a model-backed answer and for a training run's first curve on 2 shared cores.
PREDICT_TIMEOUT_MS = 180_000
TRAIN_TIMEOUT_MS = 300_000
# Height of a table row in Streamlit's data grid, px.
ROW_PX = 35


@pytest.fixture
def server(tmp_path):
    with dashboard_server(tmp_path) as (url, folders):
        yield url, folders


def _tiny_dataset(shared_data, dest):
    for brand in ("audi", "bmw"):
        (dest / brand).mkdir(parents=True)
        for photo in sorted((shared_data / BRANDS / brand).iterdir())[:3]:
            shutil.copy(photo, dest / brand / photo.name)
    return dest


def _upload(page, *paths):
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        [str(path) for path in paths])
    wait_idle(page, PREDICT_TIMEOUT_MS)


def _click_row(page, row: int) -> None:
    """Click the selection box of a table row (0 = first under the header): the grid is a canvas, so by
    position, Streamlit's header and rows being ROW_PX tall."""
    box = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + ROW_PX * (row + 1.5))
    wait_idle(page, PREDICT_TIMEOUT_MS)


def _remove_uploads(page):
    for button in page.get_by_role("button", name="Remove ").all():
        button.click()
    wait_idle(page)


def _selected(container, label: str) -> str:
    """The shown value of a select box (an input inside a combobox in Streamlit 1.67)."""
    box = container.get_by_role("combobox", name=label)
    return box.input_value() if box.evaluate("e => e.tagName") == "INPUT" else box.inner_text()


def _draws(page) -> list[str]:
    page.get_by_text("draw 1", exact=True).wait_for()
    images = page.locator('[data-testid="stImage"]').filter(has_text="draw")
    return [img.get_attribute("src") for img in images.locator("img").all()]


def test_dashboard_end_to_end(server, shared_data, tmp_path):
    url, folders = server
    with browser_page(folders["home"]) as page:
        page.goto(url)
        page.wait_for_selector('[data-testid="stFileUploaderDropzoneInput"]', state="attached",
                               timeout=PREDICT_TIMEOUT_MS)

        # Predict: a non-car photo, then a car photo.
        _upload(page, shared_data / NON_CAR)
        warning = page.locator('[data-testid="stAlertContentWarning"]').first
        assert "Not a car" in warning.inner_text()
        _remove_uploads(page)
        _upload(page, shared_data / CAR)
        verdict = page.locator('[data-testid="stAlertContentSuccess"]').first.inner_text()
        assert "confident" in verdict
        chart = page.locator('[data-testid="stPlotlyChart"]').first
        chart.wait_for(timeout=PREDICT_TIMEOUT_MS)
        assert chart.locator(".bars").count() >= 1  # plotly drew the bars

        # Many photos: a table, and a click on a row opens that photo in detail below it.
        _remove_uploads(page)
        _upload(page, shared_data / CAR, shared_data / NON_CAR)
        assert page.locator('[data-testid="stAlertContentWarning"]').count() == 0
        _click_row(page, 1)
        assert "Not a car" in page.locator('[data-testid="stAlertContentWarning"]').first.inner_text()
        assert _selected(page, "Photo in detail") == "2. caffe_cat.jpg"

        # Augmentation lab: moving the strength slider to 0 changes the grid (all draws become the photo).
        go_to(page, "Augmentation lab")
        before = _draws(page)
        assert len(before) == 8 and len(set(before)) > 1
        slider = page.locator('[data-testid="stSlider"]').filter(has_text="Global strength").get_by_role("slider")
        slider.focus()
        page.keyboard.press("Home")
        page.wait_for_function(  # strength 0 = no augmentation: every draw is the same resized photo
            """() => { const srcs = [...document.querySelectorAll('[data-testid=stImage] img')].map(i => i.src);
                       return srcs.length === 8 && new Set(srcs).size === 1; }""", timeout=60_000)
        assert _draws(page) != before

        # Train: validate the folder, launch a tiny run, watch its curve appear.
        data = _tiny_dataset(shared_data, tmp_path / "brands")
        go_to(page, "Train")
        page.get_by_role("textbox", name="Training data folder").fill(str(data))
        page.keyboard.press("Enter")
        page.get_by_text("2 classes, 6 photos").wait_for()
        launch_tiny_run(page, PREDICT_TIMEOUT_MS)
        page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Loss").first.wait_for(
            state="visible", timeout=TRAIN_TIMEOUT_MS)
        page.get_by_text("Model bundle:").wait_for(timeout=TRAIN_TIMEOUT_MS)

        # Runs survive a reload; the new bundle is offered in the sidebar and the choice survives pages.
        page.reload()
        wait_idle(page, PREDICT_TIMEOUT_MS)
        go_to(page, "Train")
        page.get_by_role("tab", name="Runs").click()
        page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Loss").first.wait_for(state="visible")
        picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
        picker.click()
        options = page.get_by_role("option").all_inner_texts()
        bundle = next((text for text in options if text.startswith("brands-")), None)
        assert bundle and "val acc" in bundle, options
        page.get_by_role("option", name=bundle, exact=True).click()
        wait_idle(page)
        go_to(page, "Data")
        go_to(page, "Evaluate")
        assert _selected(page.locator('[data-testid="stSidebar"]'), "Model") == bundle
        assert _selected(page.locator('[data-testid="stMain"]'), "Model") == bundle

        # Evaluate the new model; clicking a confusion-matrix cell opens that cell's photos.
        page.get_by_role("textbox", name="Labelled folder (one sub-folder per class)").fill(str(data))
        page.keyboard.press("Enter")
        wait_idle(page)
        page.get_by_role("button", name="Run evaluation").click()
        page.get_by_text("Confusion matrix").wait_for(timeout=PREDICT_TIMEOUT_MS)
        wait_idle(page)
        plot = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first.bounding_box()
        # Two different off-diagonal cells (rows = true, columns = predicted), so at least one click must
        # change what is shown, whichever cell the page opened on.
        for fx, fy, heading in ((0.25, 0.75, "True bmw → predicted audi"), (0.75, 0.25, "True audi → predicted bmw")):
            wait_idle(page)  # a click while the previous one's rerun redraws the chart is lost
            x, y = plot["x"] + plot["width"] * fx, plot["y"] + plot["height"] * fy
            page.mouse.move(x - 5, y - 5)
            page.mouse.move(x, y, steps=5)  # plotly needs the hover before the click
            page.mouse.click(x, y)
            page.get_by_role("heading", name=heading).wait_for()


def test_a_deep_link_as_the_first_request_shows_the_full_app(server):
    """The first request after a server start goes straight to /train (a bookmark or a reload): the page must
    still have the navigation and the sidebar, though Streamlit's old pages/ mode is active at that moment."""
    url, _ = server
    with browser_page(server[1]["home"]) as page:
        page.goto(f"{url}/train")
        page.get_by_role("heading", name="Train", exact=True).wait_for(timeout=PREDICT_TIMEOUT_MS)
        wait_idle(page, PREDICT_TIMEOUT_MS)
        sidebar = page.locator('[data-testid="stSidebar"]')
        assert sidebar.get_by_role("combobox", name="Model").count() == 1
        go_to(page, "Data")  # the app's own navigation works from there
        page.reload()
        page.get_by_role("heading", name="Data", exact=True).wait_for(timeout=PREDICT_TIMEOUT_MS)
        assert page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Augmentation lab").count() == 1


def test_on_a_phone_the_sample_gallery_wraps_and_the_answer_is_near(server):
    """390 px wide (a phone): the sample tiles sit two to a row instead of one full-width photo per line."""
    url, folders = server
    with browser_page(folders["home"]) as page:
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(url)
        page.get_by_role("tab", name="Samples").wait_for(timeout=PREDICT_TIMEOUT_MS)
        page.get_by_role("tab", name="Samples").click()
        tiles = [page.get_by_role("button", name=name).bounding_box()
                 for name in ("car black vintage", "car blue coupe", "car olive off roader")]
        assert tiles[0]["y"] == tiles[1]["y"] and tiles[1]["x"] > tiles[0]["x"] + tiles[0]["width"]  # side by side
        assert tiles[2]["y"] > tiles[0]["y"]  # ...and the third wraps to the next row
        last = page.get_by_role("button", name="noncar dump truck").bounding_box()
        assert last["y"] - tiles[0]["y"] < 2000  # the whole gallery is a couple of screens, not five
