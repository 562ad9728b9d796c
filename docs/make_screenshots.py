"""Full-height screenshots of every dashboard page into docs/screenshots/*.png.

    python docs/make_screenshots.py

Starts `streamlit run app.py` on a free port with temporary models/runs folders, drives it with Debian's
chromium (Playwright), and only ever shows the public-domain samples shipped in
carclf/resources/samples (the real test photos have no licence and must not end up in the repository).
Takes about two minutes on 2 CPU cores: it trains a tiny model so the Train and Evaluate pages have content.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from browser_helpers import browser_page, streamlit_server, wait_idle  # noqa: E402

OUT_DIR = REPO_ROOT / "docs" / "screenshots"
SAMPLES = REPO_ROOT / "carclf" / "resources" / "samples"
WIDTH = 1400
MIN_HEIGHT = 900  # px; pages taller than this are shot at their full height
# Milliseconds to wait for model-backed content and for the tiny training run to finish.
MODEL_TIMEOUT_MS = 180_000
TRAIN_TIMEOUT_MS = 400_000


def sample_dataset(dest: Path) -> Path:
    """A two-class folder (car / noncar) made of the shipped samples."""
    for photo in sorted(SAMPLES.glob("*.jpg")):
        label = photo.stem.split("_")[0]
        (dest / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, dest / label / photo.name)
    return dest


def shoot(page, name: str) -> Path:
    """Grow the viewport to the page's full height (Streamlit scrolls inside its own container), then shoot."""
    wait_idle(page, MODEL_TIMEOUT_MS)
    page.evaluate("() => document.activeElement && document.activeElement.blur()")  # no focus ring
    page.set_viewport_size({"width": WIDTH, "height": MIN_HEIGHT})
    page.wait_for_timeout(500)
    height = page.evaluate("""() => {
        const block = document.querySelector('[data-testid="stMainBlockContainer"]');
        return block.getBoundingClientRect().top + block.scrollHeight; }""")
    page.set_viewport_size({"width": WIDTH, "height": max(MIN_HEIGHT, int(height) + 40)})
    page.wait_for_timeout(1500)  # charts re-layout after the resize
    path = OUT_DIR / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": WIDTH, "height": 2200})
    print(path.relative_to(REPO_ROOT))
    return path


def go(page, title: str) -> None:
    page.get_by_role("link", name=title).click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=MODEL_TIMEOUT_MS)
    wait_idle(page, MODEL_TIMEOUT_MS)


def fill(page, label: str, text: str) -> None:
    page.get_by_role("textbox", name=label).fill(text)
    page.keyboard.press("Enter")
    wait_idle(page, MODEL_TIMEOUT_MS)


def choose(page, label: str, option: str) -> None:
    page.get_by_role("combobox", name=label).click()
    page.get_by_role("option", name=option, exact=True).click()


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="carclf-shots-") as tmp:
        tmp = Path(tmp)
        folders = {name: tmp / name for name in ("home", "models", "runs", "augment")}
        for folder in folders.values():
            folder.mkdir()
        data = sample_dataset(tmp / "samples")
        env = {"CARCLF_MODELS_DIR": str(folders["models"]), "CARCLF_RUNS_DIR": str(folders["runs"]),
               "CARCLF_AUGMENT_DIR": str(folders["augment"])}
        with streamlit_server(folders["home"], env, tmp / "server.log") as (url, _), \
                browser_page(folders["home"]) as page:
            page.set_viewport_size({"width": WIDTH, "height": 2200})
            page.goto(url)
            page.get_by_role("tab", name="Samples").wait_for(timeout=MODEL_TIMEOUT_MS)
            page.get_by_role("tab", name="Samples").click()
            page.get_by_role("button", name="car red sports").click()
            page.get_by_text("Grad-CAM for").first.wait_for(timeout=MODEL_TIMEOUT_MS)
            shoot(page, "predict")

            page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(
                [str(p) for p in sorted(SAMPLES.glob("*.jpg"))])
            page.get_by_text("Download Kaggle CSV").wait_for(timeout=MODEL_TIMEOUT_MS)
            shoot(page, "predict_many")

            go(page, "Augmentation lab")
            page.get_by_text("draw 1", exact=True).wait_for()
            shoot(page, "augmentation_lab")

            go(page, "Data")
            fill(page, "Dataset folder", str(data))
            shoot(page, "data")

            go(page, "Train")
            fill(page, "Training data folder", str(data))
            choose(page, "Image size", "96 px")
            page.get_by_role("spinbutton", name="Total epochs (0 = as in the table)").fill("4")
            page.get_by_role("button", name="Launch training").click()
            page.get_by_text("Started run").wait_for(timeout=MODEL_TIMEOUT_MS)
            shoot(page, "train_launch")
            page.get_by_role("tab", name="Runs").click()
            page.get_by_text("Model bundle:").wait_for(timeout=TRAIN_TIMEOUT_MS)
            shoot(page, "train_runs")

            page.reload()  # the sidebar lists the new bundle after a rerun of app.py
            go(page, "Evaluate")
            fill(page, "Labelled folder (one sub-folder per class)", str(data))
            page.get_by_role("button", name="Run evaluation").click()
            page.get_by_text("Confusion matrix").wait_for(timeout=MODEL_TIMEOUT_MS)
            shoot(page, "evaluate")


if __name__ == "__main__":
    main()
