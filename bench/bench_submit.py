"""Speed of ``carclf submit`` on a Kaggle-like test folder, printed as JSON.

Usage: python bench/bench_submit.py [--model default|models/<name>] [--n 500] [--tta 0] [--batch-size 32]

Builds a temporary ``test_upload/`` of N competition-style ids (``<id>.jpg``) linked to real photos from
../shared/data (repeated), then times ``write_submission`` end to end: file listing, tf.data decode and
resize, batched model calls, atomic CSV write. Model loading is timed separately. Timings depend on the
machine's load (reported as ``loadavg``): run once, on a quiet machine if possible.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Real photos cycled to fill the test folder: competition photos and Russian-market car photos (JPEGs
# of 300-700 px, like the competition's test_upload).
PHOTO_GLOBS = ("cars/sf_dl_car_classification_ostrebko/*/*.jpg", "cars/manzhura_ru_5models/*/*.jp*g")


def make_test_folder(data: Path, folder: Path, n: int) -> list[Path]:
    photos = sorted(p for pattern in PHOTO_GLOBS for p in data.glob(pattern))
    if not photos:
        sys.exit(f"no photos under {data}")
    folder.mkdir(parents=True)
    links = []
    for i in range(n):
        link = folder / f"{100000 + i}.jpg"
        link.symlink_to(photos[i % len(photos)].resolve())
        links.append(link)
    return links


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="'default' or a bundle folder")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--tta", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from carclf.predict import load_model
    from carclf.submit import write_submission

    with tempfile.TemporaryDirectory(prefix="carclf-bench-submit-") as scratch:
        test_dir = Path(scratch) / "test_upload"
        make_test_folder(Path(args.data), test_dir, args.n)
        start = time.perf_counter()
        model = load_model(args.model)
        load_s = time.perf_counter() - start

        start = time.perf_counter()
        result = write_submission(model, test_dir, Path(scratch) / "submission.csv", tta=args.tta,
                                  batch_size=args.batch_size)
        submit_s = time.perf_counter() - start
        assert result.n_rows == args.n and not result.unreadable

    print(json.dumps({
        "model": model.name,
        "img_size": model.img_size,
        "n_images": args.n,
        "tta": args.tta,
        "batch_size": args.batch_size,
        "load_model_s": round(load_s, 2),
        "submit_s": round(submit_s, 2),
        "images_per_s": round(args.n / submit_s, 1),
        "counts": result.counts,
        "cpu_count": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }))


if __name__ == "__main__":
    main()
