"""Dashboard cold start and memory: prints one JSON object.

Starts `streamlit run app.py` (fresh process, empty models folder = the default model), opens it in
headless Debian chromium, uploads one real car photo and waits for the verdict. Reports:
- server_health_s: process start -> /_stcore/health answers
- first_prediction_s: process start -> the verdict of the first photo is on screen (page load, TensorFlow
  import, default model build, TTA prediction, Grad-CAM)
- second_prediction_s: another photo in the same session (model cached)
- peak_rss_mb: the streamlit process's peak resident memory (VmHWM) after those predictions

    python bench/bench_app.py [--photo PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests"))

from browser_helpers import browser_page, streamlit_server  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
DEFAULT_PHOTOS = (SHARED / "cars/sf_dl_car_classification_ostrebko/0/3076.jpg",
                  SHARED / "cars/sf_dl_car_classification_ostrebko/8/4694.jpg")
TIMEOUT_MS = 300_000


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def predict(page, photo: Path) -> None:
    page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(photo))
    page.get_by_text("Grad-CAM for").first.wait_for(timeout=TIMEOUT_MS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, nargs=2, default=DEFAULT_PHOTOS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="carclf-bench-app-") as tmp:
        tmp = Path(tmp)
        for name in ("home", "models", "runs"):
            (tmp / name).mkdir()
        env = {"CARCLF_MODELS_DIR": str(tmp / "models"), "CARCLF_RUNS_DIR": str(tmp / "runs")}
        start = time.monotonic()
        with streamlit_server(tmp / "home", env, tmp / "server.log") as (url, process):
            healthy = time.monotonic() - start
            with browser_page(tmp / "home") as page:
                page.goto(url)
                predict(page, args.photo[0])
                first = time.monotonic() - start
                page.get_by_role("button", name="Remove ").first.click()
                page.get_by_text("Grad-CAM for").first.wait_for(state="detached", timeout=TIMEOUT_MS)
                t0 = time.monotonic()
                predict(page, args.photo[1])
                second = time.monotonic() - t0
            peak = peak_rss_mb(process.pid)
    print(json.dumps({
        "server_health_s": round(healthy, 2),
        "first_prediction_s": round(first, 2),
        "second_prediction_s": round(second, 2),
        "peak_rss_mb": round(peak, 1),
        "note": "default model, TTA 8 views + Grad-CAM, 2 CPU cores shared with other work",
    }))


if __name__ == "__main__":
    main()
