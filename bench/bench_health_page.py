"""How quick the Data page's Health view stays on a 1,000-photo dataset with hundreds of findings.

Dataset: every car photo of ../shared/data (folder per class by source/class) plus edited copies (cropped,
resized, brighter, recompressed: near-duplicates, so the review grid has hundreds of flagged photos) up to
N_PHOTOS. The doctor runs once outside the page to fill the embedding cache (its own speed is
bench_doctor.py's job); then the real page runs in ``streamlit.testing.v1.AppTest``, and each interaction a
reviewer repeats is timed: "Check health" (from the cache; its doctor run and the map's PCA also timed alone),
turning a page of the grid, one "Exclude" click (writes the decisions file, rescans the folder, redraws), and
opening a photo as a map click does.

    python bench/bench_health_page.py [--photos 1000] [--repeats 3]

Prints one JSON object and writes bench/results/health_page.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
RESULTS = REPO_ROOT / "bench" / "results" / "health_page.json"
SOURCES = ("cars/vidhyagupta_car_brands_5", "cars/mfismail_car_brands_3", "cars/manzhura_ru_5models")


def build_dataset(root: Path, n_photos: int) -> int:
    """Real photos, one folder per class, topped up with edited copies to ``n_photos``."""
    from carclf.images import is_image_file
    from doctor_helpers import edited_copy

    originals = []
    for source in SOURCES:
        for folder in sorted((SHARED_DATA / source).iterdir()):
            if not folder.is_dir():
                continue
            (root / folder.name).mkdir(parents=True, exist_ok=True)
            for photo in sorted(p for p in folder.iterdir() if is_image_file(p)):
                dest = root / folder.name / f"{Path(source).name}_{photo.name}"
                shutil.copy(photo, dest)
                originals.append(dest)
    count, round_ = len(originals), 0
    while count < n_photos:
        for photo in originals[: n_photos - count]:
            scale = 0.5 + 0.1 * (round_ % 4)
            edited_copy(photo, photo.with_name(f"copy{round_}_{photo.stem}.jpg"), crop=0.02 + 0.01 * (round_ % 4),
                        scale=scale, brightness=0.9 + 0.05 * (round_ % 5), quality=60 + 5 * (round_ % 5))
            count += 1
        round_ += 1
    return count


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from streamlit.testing.v1 import AppTest

    from carclf.doctor import diagnose
    from carclf.doctor_map import map_points
    from carclf.ui import health

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("models", "runs", "augment"):
            (tmp / name).mkdir()
            os.environ[f"CARCLF_{name.upper()}_DIR"] = str(tmp / name)
        data = tmp / "cars"
        n = build_dataset(data, args.photos)
        warm_s = timed(lambda: diagnose(data))  # fills the cache (and the pair checks) once
        cached = {}
        diagnose_s = timed(lambda: cached.update(report=diagnose(data)))  # what "Check health" runs, cached
        map_s = timed(lambda: map_points(cached["report"]))  # the map's PCA, once per check

        at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=600)
        at.switch_page("pages/data.py")
        at.run()
        open_s = timed(lambda: at.text_input(key="data_folder").set_value(str(data)).run())
        check_s = timed(lambda: next(b for b in at.button if b.key == "health_check").click().run())
        flagged = int(sum(float(m.value) for m in at.metric if m.label in health.KIND_TITLES.values()))
        pages = int(at.number_input(key=health.PAGE_KEY).proto.max) if at.number_input else 1
        turn, click, open_ = [], [], []
        for repeat in range(args.repeats):
            turn.append(timed(lambda: at.number_input(key=health.PAGE_KEY).set_value(2 + repeat).run()))
            exclude = next(b for b in at.button
                           if b.key and b.key.startswith("health_g_") and b.key.endswith("_exclude"))
            click.append(timed(lambda: exclude.click().run()))
            path = exclude.key[len("health_g_"): -len("_exclude")]
            at.session_state[health.OPEN_KEY] = path
            open_.append(timed(lambda: at.run()))
        assert not at.exception, at.exception
        result = {
            "photos": n,
            "findings": flagged,
            "grid_pages": pages,
            "per_page": health.PER_PAGE,
            "doctor_warmup_s": round(warm_s, 1),
            "open_dataset_s": round(open_s, 2),
            "check_health_cached_s": round(check_s, 2),
            "diagnose_alone_s": round(diagnose_s, 2),
            "map_pca_alone_s": round(map_s, 2),
            "turn_page_s": round(statistics.median(turn), 2),
            "exclude_click_s": round(statistics.median(click), 2),
            "open_from_map_s": round(statistics.median(open_), 2),
            "cpus": os.cpu_count(),
        }
    print(json.dumps(result, indent=2))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
