"""What one hostile upload costs in memory: prints one JSON object (and saves it to
bench/results/upload_memory.json, or --out).

A visitor of the public app can upload a few hundred kB that decode to 64 MP (the limit of
carclf.images.MAX_PIXELS): a 16-bit grayscale PNG, a transparent RGBA PNG, and, as the plausible case, a
large 8-bit JPEG. For each it reports the peak resident memory added (MB) by
- ``load_image``: the full-size decode every model input goes through (and the Predict page's model call);
- ``load_preview``: the small copy the Predict page shows and explains, and the Augmentation lab augments;
- ``predict_page``: the Predict page itself (AppTest, public mode, the default model loaded first), the
  whole answer with its TTA views and Grad-CAM.
Each measurement runs in a fresh process (its high-water mark, VmHWM, only grows). The Streamlit Community Cloud container
has about 2.7 GB; the app with its model holds about 0.75 GB before any upload.

    python bench/bench_upload_memory.py [--out FILE] [--no-page]

bench/results/upload_memory_before.json is the same script run on the code before the fixes (float64
16-bit scaling, alpha_composite, the Predict page holding the full-size photo): 1.8 / 1.4 / 0.85 GB added
by the page for the three uploads, against 0.55 / 0.78 / 0.25 GB after (upload_memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "bench" / "results" / "upload_memory.json"
SIDE = 8000  # 64 MP, the largest photo carclf accepts

MEASURE = r"""
import os, sys, time
sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
what, path = sys.argv[1], sys.argv[2]
def peak():  # VmHWM, not ru_maxrss: that one starts at the parent's size after fork + exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
if what == "predict_page":
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file({app!r}, default_timeout=600)
    at.switch_page("pages/predict.py"); at.run()
    base = peak()
    started = time.monotonic()
    data = open(path, "rb").read()
    at.file_uploader(key="predict_upload").set_value([(os.path.basename(path), data, "image/png")]).run()
    assert not at.exception, at.exception
else:
    import carclf.images as images
    if not hasattr(images, what):  # a checkout from before load_preview
        print("null null"); sys.exit(0)
    base = peak()
    started = time.monotonic()
    images.load_image(path) if what == "load_image" else images.load_preview(path, 1280)
print(round(peak() - base), round(time.monotonic() - started, 1))
"""


def make_inputs(folder: Path) -> dict:
    import numpy as np
    from PIL import Image

    deep = np.zeros((SIDE, SIDE), dtype=np.uint16)
    deep[::7, ::13] = 40000
    Image.fromarray(deep).save(folder / "gray16.png", compress_level=9)
    Image.new("RGBA", (SIDE, SIDE), (10, 20, 30, 128)).save(folder / "rgba.png", compress_level=9)
    noise = np.random.default_rng(0).integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "photo.jpg", quality=80)
    return {path.name: path for path in sorted(folder.iterdir())}


def measure(what: str, path: Path, home: Path) -> dict:
    script = MEASURE.format(repo=str(REPO_ROOT), tests=str(REPO_ROOT / "tests"), app=str(REPO_ROOT / "app.py"))
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CARCLF_MODE": "public"}
    for name in ("models", "runs", "augment", "datasets"):
        (home / name).mkdir(exist_ok=True)
        env[f"CARCLF_{name.upper()}_DIR"] = str(home / name)
    done = subprocess.run([sys.executable, "-c", script, what, str(path)], env=env, cwd=REPO_ROOT,
                          capture_output=True, text=True, check=True)
    added, seconds = (json.loads(value) for value in done.stdout.split()[-2:])
    return {"peak_added_mb": added, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-page", action="store_true", help="skip the Predict page (loads TensorFlow)")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        steps = ["load_image", "load_preview"] + ([] if args.no_page else ["predict_page"])
        result = {
            "pixels": SIDE * SIDE,
            "inputs": {name: {"bytes": path.stat().st_size,
                              **{step: measure(step, path, Path(tmp)) for step in steps}}
                       for name, path in inputs.items()},
        }
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
