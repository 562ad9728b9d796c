"""A run archive uploaded in a real browser (`streamlit run app.py` + Debian chromium): the run trained
elsewhere appears in the Runs tab, read-only, with its curves."""

from __future__ import annotations

import pytest

from browser_helpers import browser_page, dashboard_server, go_to, wait_idle
from run_archive_helpers import EPOCHS, packed_run

pytestmark = pytest.mark.browser

# Milliseconds for the first page (the app loads TensorFlow) on 2 shared cores.
LOAD_TIMEOUT_MS = 180_000


@pytest.fixture
def server(tmp_path):
    with dashboard_server(tmp_path) as (url, folders):
        yield url, folders


def test_an_uploaded_run_archive_shows_its_curves_in_the_runs_tab(server, tmp_path):
    url, folders = server
    run_id, archive = packed_run(tmp_path / "kaggle")
    with browser_page(folders["home"]) as page:
        page.goto(url)
        page.get_by_role("link", name="Train").wait_for(timeout=LOAD_TIMEOUT_MS)
        go_to(page, "Train", LOAD_TIMEOUT_MS)
        page.get_by_role("tab", name="Runs").click()
        page.get_by_text("No runs yet").wait_for()
        page.get_by_text("Import a run trained elsewhere").click()
        page.locator('[data-testid="stExpander"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
            str(archive))
        wait_idle(page)
        page.get_by_text(f"Run {run_id} imported").wait_for()
        chart = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Loss").first
        chart.wait_for(state="visible")
        legend = chart.locator(".legendtext").all_text_contents()  # SVG: no inner text
        assert {"loss", "val_loss", "accuracy", "val_accuracy"} <= set(legend), legend
        # one marker per epoch on every curve
        assert chart.locator(".scatterlayer .trace").first.locator(".point").count() == len(EPOCHS)
        assert page.get_by_text("Trained elsewhere, imported from run.zip").is_visible()
        assert page.get_by_role("button", name="Resume").is_disabled()
    assert (folders["runs"] / run_id / "history.csv").is_file()
